//! Embeds the webmail page (the files under `webmail/`) in the binary:
//! writes `$OUT_DIR/webmail_assets.rs`, a table of (relative path,
//! `include_bytes!`) read by `src/mem/assets.rs`. No Node.js: the page is
//! plain HTML, JS and CSS as written.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, base, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            if let Some(rel) = rel.to_str() {
                out.push((rel.replace('\\', "/"), path.clone()));
            }
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = root.join("webmail");
    println!("cargo:rerun-if-changed=webmail");
    println!("cargo:rerun-if-changed=build.rs");
    let mut files = Vec::new();
    walk(&dir, &dir, &mut files);
    let mut code = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, path) in files {
        code.push_str(&format!(
            "    ({:?}, include_bytes!({:?})),\n",
            rel,
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("webmail_assets.rs");
    std::fs::write(out, code).unwrap();
}
