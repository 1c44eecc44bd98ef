//! Build-time facts for `strata_build_info`, and our protobufs in `proto/`,
//! compiled with the protoc that `protoc-bin-vendored` ships.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto");
    compile_protos();
    println!("cargo:rerun-if-changed=.git/HEAD");
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=STRATA_GIT_REVISION={revision}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=STRATA_RUSTC_VERSION={version}");
}

fn compile_protos() {
    // Our own build script may use the vendored protoc directly.
    if std::env::var_os("PROTOC").is_none() {
        match protoc_bin_vendored::protoc_bin_path() {
            // SAFETY: the build script is single-threaded at this point.
            Ok(path) => unsafe { std::env::set_var("PROTOC", path) },
            Err(err) => println!("cargo:warning=no vendored protoc: {err}"),
        }
    }
    let protos = [
        "proto/prometheus/types.proto",
        "proto/prometheus/remote.proto",
        "proto/io/prometheus/write/v2/types.proto",
        "proto/strata/ingester.proto",
    ];
    if let Err(err) = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["proto"])
    {
        panic!("compiling {protos:?} failed: {err}");
    }
}
