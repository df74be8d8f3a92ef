//! A build that fails midway (here: debootstrap against an unreachable mirror) must name the
//! step, carry the tool's output, and leave no partial layer behind; the layers that did
//! complete (the kernel) stay cached. Needs root and apt package lists (downloads the kernel
//! package, ~27 MB, into a temporary cache).

use warren_image::{ImageBuildError, ImageOptions, NoProgress};

#[test]
fn unreachable_mirror_fails_in_debootstrap_and_leaves_no_partial_layer() {
    let cache = tempfile::tempdir().expect("tempdir");
    let agent = cache.path().join("agent");
    std::fs::write(&agent, b"#!/bin/sh\n").expect("agent");
    let mut opts = ImageOptions::new(cache.path(), &agent);
    // Port 9 (discard) is closed on a normal host: connection refused, fast.
    opts.mirror = Some("http://127.0.0.1:9/debian".to_owned());

    let err = warren_image::ensure_base_image(&opts, &NoProgress).expect_err("must fail");
    let ImageBuildError::Debootstrap { source } = &err else {
        panic!("expected a debootstrap error, got {err:?}");
    };
    let text = source.to_string();
    assert!(text.contains("debootstrap"), "{text}");
    assert!(
        text.contains("127.0.0.1"),
        "the tool's output names the mirror: {text}"
    );

    let entries = |sub: &str| -> Vec<String> {
        std::fs::read_dir(cache.path().join(sub))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        entries("tmp").is_empty(),
        "temp dirs left: {:?}",
        entries("tmp")
    );
    assert!(
        entries("rootfs").is_empty(),
        "partial rootfs layer: {:?}",
        entries("rootfs")
    );
    assert!(entries("images").is_empty());
    assert_eq!(
        entries("kernel").len(),
        1,
        "the finished kernel layer is kept"
    );
}
