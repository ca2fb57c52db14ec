//! Long recordings: the live segment is sealed into gzip members, a crash
//! while sealing loses nothing and duplicates nothing, and a run longer
//! than the reader keeps is thinned evenly with its end kept.

use std::io::Write;
use std::path::Path;

use leakscope_rundir::{
    Meta, ProcSample, Run, RunFile, RunWriter, Sample, Warning, MAX_SAMPLES, SEAL_EVERY,
};

fn sample(seq: u64) -> Sample {
    Sample {
        seq,
        t_ms: seq * 250,
        proc: Some(ProcSample {
            rss_bytes: 1_000_000 + seq * 8,
            fds: 10 + seq / 100,
            top_files: vec![(format!("/var/log/app/req-{seq}.log"), 1)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn write(dir: &Path, n: u64) {
    let mut w = RunWriter::create(dir, Meta::default()).unwrap();
    for seq in 0..n {
        w.append(&sample(seq)).unwrap();
    }
}

fn seqs(run: &Run) -> Vec<u64> {
    run.samples.iter().map(|s| s.seq).collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn segments_are_sealed_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2 * SEAL_EVERY + 17;
    write(dir.path(), n);
    assert_eq!(lines(&RunFile::Samples.path(dir.path())), 17);
    let sealed = std::fs::metadata(RunFile::SealedSamples.path(dir.path())).unwrap();
    let json: usize = (0..2 * SEAL_EVERY)
        .map(|s| serde_json::to_vec(&sample(s)).unwrap().len() + 1)
        .sum();
    // JSON lines of one run repeat their keys: gzip takes them to a tenth
    // or less (measured ~1/17 on these).
    assert!(
        (sealed.len() as usize) * 10 < json,
        "{} B sealed of {json} B",
        sealed.len()
    );
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(seqs(&run), (0..n).collect::<Vec<_>>());
    assert_eq!(run.samples[5], sample(5));
    assert!(run
        .warnings
        .iter()
        .all(|w| matches!(w, Warning::Unfinished)));
}

/// The live segment gzipped onto the sealed file, as `seal` does.
fn append_member(dir: &Path, text: &[u8]) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text).unwrap();
    let member = gz.finish().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(RunFile::SealedSamples.path(dir))
        .unwrap();
    f.write_all(&member).unwrap();
}

#[test]
fn a_crash_between_sealing_and_emptying_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = SEAL_EVERY + 40;
    write(dir.path(), n);
    // The crash: the live segment sealed, but not yet emptied.
    let live = std::fs::read(RunFile::Samples.path(dir.path())).unwrap();
    append_member(dir.path(), &live);
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(seqs(&run), (0..n).collect::<Vec<_>>());
}

#[test]
fn a_crash_mid_seal_is_read_up_to_the_cut_and_the_rest_from_the_live_file() {
    let dir = tempfile::tempdir().unwrap();
    let n = SEAL_EVERY + 40;
    write(dir.path(), n);
    let sealed_path = RunFile::SealedSamples.path(dir.path());
    let whole = std::fs::metadata(&sealed_path).unwrap().len();
    let live = std::fs::read(RunFile::Samples.path(dir.path())).unwrap();
    append_member(dir.path(), &live);
    // Cut the second member half way: the recorder died writing it.
    let grown = std::fs::metadata(&sealed_path).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sealed_path)
        .unwrap();
    f.set_len(whole + (grown - whole) / 2).unwrap();
    let run = Run::open(dir.path()).unwrap();
    assert_eq!(seqs(&run), (0..n).collect::<Vec<_>>());
    assert!(
        run.warnings
            .iter()
            .any(|w| matches!(w, Warning::TornSealed { .. })),
        "{:?}",
        run.warnings
    );
}

#[test]
fn a_damaged_sealed_segment_loses_only_its_samples_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3 * SEAL_EVERY + 10;
    write(dir.path(), n);
    let path = RunFile::SealedSamples.path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Garble the middle of the file: the second member.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, bytes).unwrap();
    // Garbage that decodes to a line is corruption, an error; garbage the
    // decoder refuses ends the sealed file there. Never a silent loss.
    let run = match Run::open(dir.path()) {
        Err(e) => {
            assert!(e.to_string().contains(RunFile::SealedSamples.name()), "{e}");
            return;
        }
        Ok(run) => run,
    };
    let gap = run.warnings.iter().find_map(|w| match w {
        Warning::Gap { after, next } => Some((*after, *next)),
        _ => None,
    });
    let (after, next) = gap.unwrap_or_else(|| panic!("{:?}", run.warnings));
    assert!(
        after < 2 * SEAL_EVERY && next == 3 * SEAL_EVERY,
        "{after} {next}"
    );
    let kept = seqs(&run);
    assert!(kept.iter().all(|s| *s <= after || *s >= next));
    assert_eq!(*kept.last().unwrap(), n - 1);
}

#[test]
fn a_sealed_segment_cut_out_is_named_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3 * SEAL_EVERY + 10;
    write(dir.path(), n);
    // Split the sealed file into its members, and drop the second.
    let path = RunFile::SealedSamples.path(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let starts: Vec<usize> = (0..bytes.len() - 2)
        .filter(|&i| bytes[i..i + 3] == [0x1f, 0x8b, 0x08])
        .collect();
    let members: Vec<&[u8]> = starts
        .iter()
        .enumerate()
        .map(|(k, &a)| &bytes[a..*starts.get(k + 1).unwrap_or(&bytes.len())])
        .collect();
    assert_eq!(members.len(), 3, "{starts:?}");
    std::fs::write(&path, [members[0], members[2]].concat()).unwrap();
    let run = Run::open(dir.path()).unwrap();
    let gaps: Vec<(u64, u64)> = run
        .warnings
        .iter()
        .filter_map(|w| match w {
            Warning::Gap { after, next } => Some((*after, *next)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, [(SEAL_EVERY - 1, 2 * SEAL_EVERY)]);
    assert_eq!(run.samples.len() as u64, n - SEAL_EVERY);
}

#[test]
fn damage_inside_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    RunWriter::create(dir.path(), Meta::default()).unwrap();
    append_member(dir.path(), b"{\"seq\":0,\"t_ms\":0}\nnot json\n");
    let err = Run::open(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(RunFile::SealedSamples.name()) && err.contains(":2:"),
        "{err}"
    );
}

#[test]
fn a_run_longer_than_the_reader_keeps_is_thinned_evenly_with_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2 * MAX_SAMPLES as u64 + 3;
    write(dir.path(), n);
    let run = Run::open(dir.path()).unwrap();
    let kept = seqs(&run);
    assert!(kept.len() <= MAX_SAMPLES + 1, "{}", kept.len());
    assert!(kept.len() > MAX_SAMPLES / 2, "{}", kept.len());
    assert_eq!((kept[0], *kept.last().unwrap()), (0, n - 1));
    let stride = kept[1] - kept[0];
    assert!(kept[..kept.len() - 1]
        .windows(2)
        .all(|w| w[1] - w[0] == stride));
    let said = run.warnings.iter().find_map(|w| match w {
        Warning::Thinned { ticks, stride, .. } => Some((*ticks, *stride)),
        _ => None,
    });
    assert_eq!(said, Some((n, stride)));
}
