//! The tests that check leakscope against a real outside tool (`unzip -t`,
//! `go tool pprof`, `promtool`, Prometheus, VictoriaMetrics, `unshare -n`). They are
//! `#[ignore]`d, so `cargo test` reports them as ignored instead of passing
//! them unrun; here they run with `--ignored` where their tools are
//! installed, and each one whose tool is missing is reported as skipped,
//! or fails the run under `LEAKSCOPE_REQUIRE_TOOLS` (CI).

use std::process::{Command, Stdio};

use crate::workspace;

/// CI sets it: a missing tool fails the run instead of being skipped.
pub const REQUIRE_ENV: &str = "LEAKSCOPE_REQUIRE_TOOLS";

/// Tests of one cargo test binary that need the same tools.
struct ToolTests {
    /// `(binary, arguments)`: each must run and succeed.
    tools: &'static [(&'static str, &'static str)],
    /// The Debian package(s) that provide them.
    apt: &'static str,
    /// `cargo test` arguments selecting the binary.
    cargo: &'static [&'static str],
    /// A libtest name filter, when only some of its ignored tests need them.
    filter: Option<&'static str>,
}

const UNZIP: (&str, &str) = ("unzip", "-v");
const GO: (&str, &str) = ("go", "version");
const PROMTOOL: (&str, &str) = ("promtool", "--version");
const PROMETHEUS: (&str, &str) = ("prometheus", "--version");
const VICTORIA: (&str, &str) = ("victoria-metrics", "-version");
/// Not only installed: able to make a network namespace (CAP_SYS_ADMIN).
const UNSHARE: (&str, &str) = ("unshare", "-n true");

const TABLE: &[ToolTests] = &[
    ToolTests {
        tools: &[UNZIP],
        apt: "unzip",
        cargo: &["-p", "download-server", "--test", "zip_archive"],
        filter: None,
    },
    ToolTests {
        tools: &[GO],
        apt: "golang-go",
        cargo: &["-p", "leakscope-agent", "--test", "go_pprof"],
        filter: None,
    },
    ToolTests {
        tools: &[GO],
        apt: "golang-go",
        cargo: &[
            "-p",
            "leakscope-agent",
            "--features",
            "cpu",
            "--test",
            "scrape_targets",
        ],
        filter: None,
    },
    ToolTests {
        tools: &[PROMTOOL],
        apt: "prometheus",
        cargo: &["-p", "leakscope-agent", "--test", "metrics"],
        filter: None,
    },
    ToolTests {
        tools: &[PROMTOOL, PROMETHEUS],
        apt: "prometheus",
        cargo: &["-p", "leakscope", "--test", "fleet_history"],
        filter: Some("prometheus_history"),
    },
    ToolTests {
        tools: &[VICTORIA],
        apt: "victoria-metrics",
        cargo: &["-p", "leakscope", "--test", "fleet_history"],
        filter: Some("victoria_metrics_history"),
    },
    ToolTests {
        tools: &[PROMETHEUS],
        apt: "prometheus",
        cargo: &["-p", "leakscope", "--test", "fleet_live"],
        filter: None,
    },
    ToolTests {
        tools: &[PROMTOOL, PROMETHEUS],
        apt: "prometheus",
        cargo: &["-p", "leakscope", "--test", "fleet_rules"],
        filter: None,
    },
    ToolTests {
        tools: &[UNSHARE],
        apt: "util-linux, and root or CAP_SYS_ADMIN",
        cargo: &["-p", "leakscope", "--test", "procfs_source"],
        filter: Some("another_network_namespace"),
    },
];

fn runs(tool: (&str, &str)) -> bool {
    Command::new(tool.0)
        .args(tool.1.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the step did: the runs that failed, and the tests skipped for a
/// missing tool (each with the tool and its package).
#[derive(Default)]
pub struct Outcome {
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
}

/// Runs every tool-needing test whose tools are installed.
pub fn run() -> Outcome {
    let required = std::env::var_os(REQUIRE_ENV).is_some();
    let mut out = Outcome::default();
    for t in TABLE {
        let what = format!(
            "cargo test {} -- --ignored{}",
            t.cargo.join(" "),
            t.filter.map(|f| format!(" {f}")).unwrap_or_default()
        );
        if let Some(missing) = t.tools.iter().find(|tool| !runs(**tool)) {
            let why = format!("{what}: needs `{}` (apt-get install {})", missing.0, t.apt);
            if required {
                eprintln!("xtask test: {why}, and {REQUIRE_ENV} is set");
                out.failed.push(why);
            } else {
                out.skipped.push(why);
            }
            continue;
        }
        eprintln!("xtask test: {what}");
        let mut cmd = Command::new(workspace::cargo());
        cmd.arg("test").args(t.cargo).args(["--", "--ignored"]);
        if let Some(f) = t.filter {
            cmd.arg(f);
        }
        if !crate::passes(cmd) {
            out.failed.push(what);
        }
    }
    out
}

/// The unused-dependency check: `cargo machete`, which reads each crate's
/// sources for the dependencies its Cargo.toml names. A dependency kept only
/// for a feature it turns on belongs in the crate's
/// `[package.metadata.cargo-machete] ignored`, with the reason beside it.
pub fn unused_dependencies() -> Outcome {
    let mut out = Outcome::default();
    let what = "cargo machete (unused dependencies)".to_string();
    let Some(machete) = cargo_installed("cargo-machete") else {
        let why = format!("{what}: needs cargo-machete (cargo install --locked cargo-machete)");
        if std::env::var_os(REQUIRE_ENV).is_some() {
            eprintln!("xtask test: {why}, and {REQUIRE_ENV} is set");
            out.failed.push(why);
        } else {
            out.skipped.push(why);
        }
        return out;
    };
    eprintln!("xtask test: {what}");
    let mut cmd = Command::new(machete);
    cmd.current_dir(workspace::root());
    if !crate::passes(cmd) {
        out.failed.push(what);
    }
    out
}

/// A binary `cargo install` put on PATH or in `$CARGO_HOME/bin` (which a
/// shell's PATH may lack), run directly rather than as a cargo subcommand.
fn cargo_installed(name: &str) -> Option<std::path::PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(home.map(|h| h.join("bin")))
        .map(|dir| dir.join(name))
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}
