//! The task hooks count exactly, by spawn site, on a real runtime; the dump
//! finds the parked tasks and joins them to their site.

use std::time::Duration;

use leakscope_rundir::TaskSites;

fn site<'a>(s: &'a TaskSites, file_line: &str) -> Option<&'a leakscope_rundir::TaskSite> {
    s.sites.iter().find(|x| x.location.contains(file_line))
}

async fn parked_forever() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// Spawns `n` tasks that park on a timer from one line, and returns that
/// line's `file:line`.
fn spawn_parked(n: usize) -> (String, Vec<tokio::task::JoinHandle<()>>) {
    #[rustfmt::skip]
    let (handles, line) = ((0..n).map(|_| tokio::spawn(parked_forever())).collect(), line!());
    (format!("{}:{line}:", file!()), handles)
}

#[test]
fn hooks_count_every_spawn_and_end_by_site_and_the_dump_finds_them() {
    let rt = leakscope_agent::tasks::runtime()
        .worker_threads(2)
        .build()
        .unwrap();
    assert!(leakscope_agent::tasks::installed());
    rt.block_on(async {
        let (parked_at, parked) = spawn_parked(500);
        // 2,000 tasks that end, from another site, racing the parked ones
        // across both workers; and blocking tasks, whose ends tokio reports
        // without their spawns.
        let done: Vec<_> = (0..2000)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    i
                })
            })
            .collect();
        for d in done {
            d.await.unwrap();
        }
        for _ in 0..50 {
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
        let snap = leakscope_agent::tasks::snapshot().expect("hooks installed");
        let leaked = site(&snap, &parked_at).expect("the parked tasks' site");
        assert_eq!((leaked.live, leaked.spawned_total), (500, 500), "{snap:#?}");
        let ended = snap
            .sites
            .iter()
            .find(|s| s.spawned_total == 2000)
            .expect("the ended tasks' site");
        assert_eq!(ended.live, 0);
        // The hooks agree with the runtime's own count of alive tasks.
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(snap.live as usize, alive, "{snap:#?}");

        for p in &parked {
            p.abort();
        }
        for p in parked {
            let _ = p.await;
        }
        let snap = leakscope_agent::tasks::snapshot().unwrap();
        assert_eq!(site(&snap, &parked_at).unwrap().live, 0);
        #[cfg(feature = "taskdump")]
        the_dump_joins_parked_tasks_to_their_site_and_stack().await;
    });
}

/// Part of the test above: the hooks' tables are global to the process, so
/// two tests at once would count each other's tasks.
#[cfg(feature = "taskdump")]
async fn the_dump_joins_parked_tasks_to_their_site_and_stack() {
    {
        let (parked_at, parked) = spawn_parked(300);
        tokio::task::yield_now().await;
        let d = leakscope_agent::tasks::dump(
            &tokio::runtime::Handle::current(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let g = d
            .groups
            .iter()
            .find(|g| {
                g.spawned_at
                    .as_deref()
                    .is_some_and(|s| s.contains(&parked_at))
            })
            .unwrap_or_else(|| panic!("no group from {parked_at}: {d:#?}"));
        assert_eq!(g.count, 300, "{d:#?}");
        let parked_text = g.parked_at();
        assert!(
            parked_text.contains("tokio::time::sleep::Sleep"),
            "{parked_text}"
        );
        assert!(parked_text.contains("parked_forever"), "{parked_text}");
        for p in parked {
            p.abort();
        }
    }
}
