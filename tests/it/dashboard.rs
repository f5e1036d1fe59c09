//! The dashboard in a real browser (Debian's Chromium, driven by
//! playwright-core): tests/browser/dashboard.cjs starts `chorus demo` and
//! checks the live, search, SQL and status pages, a phone's screen and the
//! token prompt. scripts/test.sh installs both peers; without them this test
//! fails, never skips.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let modules = std::env::var_os("CHORUS_TEST_NODE_MODULES").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/chorus/node/node_modules"),
        PathBuf::from,
    );
    assert!(
        modules.join("playwright-core").is_dir(),
        "playwright-core is not in {}: run scripts/test.sh, which installs it",
        modules.display()
    );
    let chromium = std::env::var("CHORUS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run scripts/test.sh, which installs it"
    );
    let shots = std::env::var_os("CHORUS_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        PathBuf::from,
    );
    let output = Command::new("node")
        .arg(root.join("tests/browser/dashboard.cjs"))
        .env("CHORUS_BIN", env!("CARGO_BIN_EXE_chorus"))
        .env("CHORUS_CHROMIUM", &chromium)
        .env("CHORUS_SCREENSHOTS", &shots)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("checks passed"), "{stdout}");
    for page in ["live", "search", "sql", "status", "live-phone"] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
    println!("{stdout}screenshots in {}", shots.display());
}
