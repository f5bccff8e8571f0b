//! Every configuration shipped under `config/` passes `ductd check --strict`
//! (`config/examples/seed/` needs the seed's sources: the examples crate
//! checks those with `ductd-examples`).

mod common;

use std::path::Path;

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read config dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            if !path.ends_with("seed") {
                yaml_files(&path, out);
            }
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            out.push(path);
        }
    }
}

#[test]
fn shipped_configurations_are_valid() {
    let mut files = Vec::new();
    yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"), &mut files);
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let (code, out, err) = common::ductd_output(&["check", "--strict", "-c", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{}:\n{out}{err}", file.display());
    }
}
