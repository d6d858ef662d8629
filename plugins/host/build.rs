//! Builds the bundled plugins (`plugins/guests`, a workspace of its own) for
//! wasm32-wasip2, so that `cargo run -p livechat-server` needs no extra step — as
//! wasmtime's own test-programs crate does. The target comes from rust-toolchain.toml.

use std::path::PathBuf;
use std::process::Command;

const GUESTS: [&str; 4] = ["sanitize", "moderation", "template", "hostile"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest.join("../guests");
    let rules = manifest.join("../rules");
    let wit = manifest.join("../wit");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out.join("guests-target");

    for dir in [&guests, &rules, &wit] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }

    // Plain `cargo` through rustup, not `$CARGO`: the guests are built with the
    // toolchain of rust-toolchain.toml (which lists the wasm target), even when the
    // outer build runs on another one (`cargo +nightly fuzz`).
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&guests)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's flags (sanitizers, coverage, host-only settings) must not leak
    // into the wasm build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let outer = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || matches!(key.as_str(), "RUSTFLAGS" | "RUSTUP_TOOLCHAIN");
        if outer {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("running cargo to build the plugin guests");
    assert!(
        status.success(),
        "building the plugin guests failed; to see why, run: \
         cargo build --release --target wasm32-wasip2 --manifest-path plugins/guests/Cargo.toml"
    );

    let built = target_dir.join("wasm32-wasip2/release");
    for guest in GUESTS {
        assert!(
            built.join(format!("{guest}.wasm")).exists(),
            "{guest}.wasm was not built"
        );
    }
    println!("cargo:rustc-env=LIVECHAT_GUESTS_DIR={}", built.display());
}
