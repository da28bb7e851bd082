"""Entry point of the ``s3dlio`` command installed with the wheel."""

import sys

from s3dlio._native import cli_main


def main() -> int:
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
