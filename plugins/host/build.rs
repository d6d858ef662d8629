//! Builds the bundled plugins (`plugins/guests`, a workspace of its own) for
//! wasm32-wasip2, so that `cargo run -p livechat-server` needs no extra step — as
//! wasmtime's own test-programs crate does. The target is listed in rust-toolchain.toml
//! and added with rustup when missing.

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

    ensure_wasm_target(&guests);

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
    without_outer_build_env(&mut cmd);
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

/// The outer build's settings (sanitizers, coverage, host-only flags, another
/// toolchain) must not leak into the wasm build.
fn without_outer_build_env(cmd: &mut Command) {
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
}

/// rustup installs the targets of rust-toolchain.toml only when it installs the
/// toolchain itself; on a machine that already had 1.95.0 the wasm target is missing.
/// Add it here, so that a fresh clone still builds with one command.
fn ensure_wasm_target(guests: &std::path::Path) {
    let mut list = Command::new("rustup");
    list.current_dir(guests)
        .args(["target", "list", "--installed"]);
    without_outer_build_env(&mut list);
    let Ok(installed) = list.output() else {
        // No rustup: the toolchain is managed some other way; the build below says
        // what is missing.
        return;
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|t| t.trim() == "wasm32-wasip2")
    {
        return;
    }
    let mut add = Command::new("rustup");
    add.current_dir(guests)
        .args(["target", "add", "wasm32-wasip2"]);
    without_outer_build_env(&mut add);
    let added = add.status().map(|s| s.success()).unwrap_or(false);
    assert!(
        added,
        "the wasm32-wasip2 target is missing and `rustup target add wasm32-wasip2` failed"
    );
}
