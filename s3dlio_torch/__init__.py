"""PyTorch Distributed Checkpoint (DCP) on every s3dlio backend.

    import torch.distributed.checkpoint as dcp
    from s3dlio_torch import S3DlioReader, S3DlioWriter

    dcp.save(state_dict, storage_writer=S3DlioWriter("s3://bucket/run/step-100"))
    dcp.load(state_dict, storage_reader=S3DlioReader("s3://bucket/run/step-100"))

The checkpoint layout is torch's own (``__<rank>_<n>...distcp`` files plus
``.metadata``), so torch's ``FileSystemReader`` loads a local checkpoint
written here, and `S3DlioReader` loads one torch wrote. Every byte goes
through the Rust core in ``s3dlio._native``.
"""

from s3dlio._extras import require

# Before any torch import below: without torch, one error naming the extra.
require("torch", "torch")

from s3dlio_torch._reader import S3DlioReader  # noqa: E402
from s3dlio_torch._writer import CheckpointExistsError, S3DlioWriter  # noqa: E402

__all__ = ["CheckpointExistsError", "S3DlioReader", "S3DlioWriter"]
