//! `scripts/deps.sh` finds the libclang that bindgen loads, and only that one: a fresh Debian
//! image ships `libclang-cpp.so.14`, which bindgen cannot use, so its presence must not stop
//! `make run` / `make test` from installing `libclang-dev`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deps_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deps.sh")
}

/// Runs `deps.sh check-libclang` with the search limited to a directory holding `files`.
fn libclang_found_among(files: &[&str]) -> bool {
    let dir = std::env::temp_dir().join(format!(
        "tally-deps-{}-{}",
        std::process::id(),
        files.join("+")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for f in files {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    let status = Command::new("bash")
        .arg(deps_script())
        .arg("check-libclang")
        .env("DEPS_LIBCLANG_DIRS", &dir)
        .status()
        .expect("bash runs deps.sh");
    std::fs::remove_dir_all(&dir).unwrap();
    status.success()
}

#[test]
fn libclang_cpp_alone_is_not_a_libclang_bindgen_can_load() {
    assert!(!libclang_found_among(&[]));
    assert!(!libclang_found_among(&["libclang-cpp.so.14"]));
    assert!(!libclang_found_among(&[
        "libclang-cpp.so.14",
        "libclang-cpp.so"
    ]));
}

#[test]
fn the_libraries_bindgen_loads_are_found() {
    assert!(libclang_found_among(&["libclang.so"]));
    assert!(libclang_found_among(&["libclang.so.1"]));
    assert!(libclang_found_among(&["libclang-14.so.1"]));
    assert!(libclang_found_among(&[
        "libclang-cpp.so.14",
        "libclang-14.so.1"
    ]));
}

#[test]
fn this_machine_has_a_libclang_after_deps_ran() {
    // `make test` runs deps.sh before building, and the module built: the real search agrees.
    let status = Command::new("bash")
        .arg(deps_script())
        .arg("check-libclang")
        .status()
        .expect("bash runs deps.sh");
    assert!(status.success(), "deps.sh check-libclang finds no libclang");
}
