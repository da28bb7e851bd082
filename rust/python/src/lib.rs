//! The Python module `s3dlio._native`: thin bindings over `s3dlio-core`.
//! Every call that does I/O releases the GIL.

use pyo3::prelude::*;

mod args;
mod buffer;
mod checkpoint;
mod dtype;
mod errors;
mod json;
mod listing;
mod objects;
mod options;
mod pack;
mod runtime;
mod shard_file;
mod tf;
mod validated;

/// Run the `s3dlio` command line with `argv` (without the program name);
/// returns its exit code.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    let args = std::iter::once("s3dlio".to_string()).chain(argv);
    py.detach(|| s3dlio_cli::run(args))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add(
        "IntegrityError",
        m.py().get_type::<errors::IntegrityError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(objects::put_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(objects::get_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(objects::get_range, m)?)?;
    m.add_function(wrap_pyfunction!(objects::read_into, m)?)?;
    m.add_function(wrap_pyfunction!(objects::stat, m)?)?;
    m.add_function(wrap_pyfunction!(objects::list, m)?)?;
    m.add_function(wrap_pyfunction!(objects::delete, m)?)?;
    m.add_function(wrap_pyfunction!(objects::upload, m)?)?;
    m.add_function(wrap_pyfunction!(objects::download, m)?)?;
    m.add_function(wrap_pyfunction!(objects::open_writer, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(pack::read_items, m)?)?;
    m.add_function(wrap_pyfunction!(pack::put_object, m)?)?;
    m.add_function(wrap_pyfunction!(pack::resolve_uri, m)?)?;
    m.add_function(wrap_pyfunction!(pack::single_put_limit, m)?)?;
    m.add_function(wrap_pyfunction!(pack::check_encoding, m)?)?;
    m.add_function(wrap_pyfunction!(dtype::byte_group_width, m)?)?;
    m.add_function(wrap_pyfunction!(pack::block_crc32c, m)?)?;
    m.add_class::<pack::PackWriter>()?;
    m.add_class::<pack::PyPackedItem>()?;
    m.add_class::<pack::PyItemRead>()?;
    m.add_function(wrap_pyfunction!(listing::list_dir, m)?)?;
    m.add_function(wrap_pyfunction!(listing::head_object, m)?)?;
    m.add_function(wrap_pyfunction!(listing::get_object, m)?)?;
    m.add_class::<checkpoint::PyCheckpointStore>()?;
    m.add_class::<checkpoint::PyCheckpointWriter>()?;
    m.add_class::<checkpoint::PyShardStream>()?;
    m.add_class::<checkpoint::PyCheckpointReader>()?;
    m.add_class::<checkpoint::CheckpointInfo>()?;
    m.add_class::<shard_file::ShardFile>()?;
    m.add_class::<validated::PyValidatedCheckpointReader>()?;
    m.add_class::<objects::ObjectStreamWriter>()?;
    tf::register(m)?;
    Ok(())
}
