//! Shared helpers: paths, compiling pipeline text, tracing for `TEST_LOG=1`.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use caly::graph::Graph;
use caly::registry::{CompileOptions, Registry};
use caly::spec::PipelineSpec;

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    }
});

/// Turns on logging when `TEST_LOG` is set.
pub fn init() {
    LazyLock::force(&TRACING);
}

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Compiles pipeline TOML text with options.
///
/// # Panics
///
/// When it does not compile.
pub fn compile_with(text: &str, options: CompileOptions) -> Arc<Graph> {
    init();
    let spec = PipelineSpec::parse(text, "<test>").unwrap_or_else(|e| panic!("{e}"));
    Graph::compile(&spec, &Registry::with_builtin(), &options).unwrap_or_else(|e| panic!("{e}"))
}
