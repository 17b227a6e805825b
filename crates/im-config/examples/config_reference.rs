//! Prints the configuration reference as Markdown. With `--write`, rewrites the crate's
//! `CONFIG_REFERENCE.md` and `example-config.yaml` instead, which the crate's tests compare against.
//!
//! `cargo run -p im-config --example config_reference [-- --write]`

use std::path::Path;

fn main() -> std::io::Result<()> {
    if std::env::args().any(|arg| arg == "--write") {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::write(crate_dir.join("CONFIG_REFERENCE.md"), im_config::reference_markdown())?;
        std::fs::write(crate_dir.join("example-config.yaml"), im_config::example_yaml())?;
        println!("wrote CONFIG_REFERENCE.md and example-config.yaml in {}", crate_dir.display());
    } else {
        print!("{}", im_config::reference_markdown());
    }
    Ok(())
}
