//! `leakscope report`: HTML from run directories.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args)]
pub struct ReportArgs {
    /// Run directories; paired into scenario pages by their `scenario` and
    /// `variant` labels.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write index.html and the scenario pages.
    #[arg(long, short)]
    pub out: PathBuf,
}

/// Exit 0 when written, 2 when a run directory cannot be read (nothing is
/// written then), 1 when writing fails.
pub fn run(args: ReportArgs) -> ExitCode {
    let mut analyses = Vec::new();
    let mut unusable = 0;
    for dir in &args.runs {
        match leakscope_analysis::analyze(dir) {
            Ok(a) => analyses.push(a),
            Err(e) => {
                tell!("error: {e}");
                unusable += 1;
            }
        }
    }
    if unusable > 0 {
        tell!("{unusable} run director(ies) unusable; no report written");
        return ExitCode::from(2);
    }
    for a in &analyses {
        for n in &a.notes {
            tell!("note: {}: {n}", a.dir.display());
        }
    }
    match leakscope_report::render(&analyses, &args.out) {
        Ok(w) => {
            tell!("{} scenario page(s)", w.pages.len());
            say!("{}", w.index.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tell!("error: {e}");
            match e {
                leakscope_report::ReportError::Duplicate { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
