//! HTML leak reports from analysed run directories: one self-contained page
//! per scenario, its variants (leaky and fixed) on the same axes, and an
//! index of scenario × variant × metric.
//!
//! Invariants: no network, no external URL in any page (CSS and SVG are
//! inline), and every figure shown comes from the analysis of the run
//! directories given.

pub(crate) mod charts;
pub(crate) mod html;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use leakscope_analysis::Analysis;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rendering {page}: {source}")]
    Template {
        page: String,
        source: minijinja::Error,
    },
    #[error("two runs are both scenario {scenario:?}, variant {variant:?}: {first} and {second}; give them distinct --label variant=…")]
    Duplicate {
        scenario: String,
        variant: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    pub index: PathBuf,
    pub pages: Vec<PathBuf>,
}

/// Groups runs by scenario label; within one, leaky first, fixed second,
/// others by name.
pub fn group(analyses: &[Analysis]) -> Result<BTreeMap<String, Vec<&Analysis>>, ReportError> {
    let mut groups: BTreeMap<String, Vec<&Analysis>> = BTreeMap::new();
    for a in analyses {
        let list = groups.entry(a.scenario()).or_default();
        if let Some(other) = list.iter().find(|o| o.variant() == a.variant()) {
            return Err(ReportError::Duplicate {
                scenario: a.scenario(),
                variant: a.variant(),
                first: other.dir.clone(),
                second: a.dir.clone(),
            });
        }
        list.push(a);
    }
    let rank = |v: &str| match v {
        leakscope_rundir::labels::LEAKY => 0,
        leakscope_rundir::labels::FIXED => 1,
        _ => 2,
    };
    for list in groups.values_mut() {
        list.sort_by(|a, b| {
            rank(&a.variant())
                .cmp(&rank(&b.variant()))
                .then_with(|| a.variant().cmp(&b.variant()))
        });
    }
    Ok(groups)
}

/// Renders `index.html` and one page per scenario into `out`.
pub fn render(analyses: &[Analysis], out: &Path) -> Result<Written, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let groups = group(analyses)?;
    let env = html::environment();
    let names = html::page_names(groups.keys());
    let mut pages = Vec::new();
    for (name, runs) in &groups {
        let page = out.join(&names[name]);
        let text =
            html::scenario(&env, name, runs, out).map_err(|source| ReportError::Template {
                page: page.display().to_string(),
                source,
            })?;
        std::fs::write(&page, text).map_err(io(&page))?;
        pages.push(page);
    }
    let index = out.join("index.html");
    let text = html::index(&env, &groups, &names, analyses.len()).map_err(|source| {
        ReportError::Template {
            page: "index.html".into(),
            source,
        }
    })?;
    std::fs::write(&index, text).map_err(io(&index))?;
    Ok(Written { index, pages })
}
