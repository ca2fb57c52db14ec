//! The task hooks count exactly, by spawn site, on a real runtime; the dump
//! finds the parked tasks and joins them to their site.

mod common;

use std::time::Duration;

use leakscope_wire::TaskSites;

fn site<'a>(s: &'a TaskSites, file_line: &str) -> Option<&'a leakscope_wire::TaskSite> {
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
        // The multi-thread dump is refused unless allowed: it can wedge.
        let agent = common::start_agent();
        let r = tokio::task::spawn_blocking(move || {
            common::get(agent.local_addr().unwrap(), "/debug/tasks/dump")
        })
        .await
        .unwrap();
        let expected = if cfg!(feature = "taskdump") { 403 } else { 404 };
        assert_eq!(r.status, expected, "{}", r.text());
    });
    drop(rt);
    // Dumps on a current-thread runtime, which is dumped from inside, with
    // no barrier between workers that a loaded machine could wedge.
    let mut b = tokio::runtime::Builder::new_current_thread();
    let rt = leakscope_agent::tasks::install(b.enable_all())
        .build()
        .unwrap();
    rt.block_on(async {
        #[cfg(feature = "taskdump")]
        the_dump_joins_parked_tasks_to_their_site_and_stack().await;
        served_over_http().await;
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
        // Awaited, not only aborted: an abort ends the task at the
        // scheduler's next turn, and the next part counts this site again.
        for p in &parked {
            p.abort();
        }
        for p in parked {
            let _ = p.await;
        }
    }
}

/// Part of the test above: the same figures through the agent's endpoints,
/// and the dump's bad input refused.
async fn served_over_http() {
    let agent = leakscope_agent::Agent::builder()
        .listen(Some("127.0.0.1:0".parse().unwrap()))
        .task_dumps(true)
        .start()
        .unwrap();
    let addr = agent.local_addr().unwrap();
    // The client blocks; the runtime's one thread must stay free to dump.
    let get = |path: &'static str| async move {
        tokio::task::spawn_blocking(move || common::get(addr, path))
            .await
            .unwrap()
    };
    let (parked_at, parked) = spawn_parked(7);
    tokio::task::yield_now().await;
    let tasks = get("/debug/tasks").await.json();
    let sites: TaskSites = serde_json::from_value(tasks["hooks"].clone()).unwrap();
    assert_eq!(
        site(&sites, &parked_at).map(|s| s.live),
        Some(7),
        "{sites:#?}"
    );
    assert_eq!(get("/debug").await.json()["features"]["task_hooks"], true);
    for bad in [
        "/debug/tasks/dump?seconds=0",
        "/debug/tasks/dump?seconds=61",
        "/debug/tasks/dump?seconds=x",
        "/debug/tasks/dump?format=xml",
        "/debug/tasks/dump?timeout=5",
    ] {
        let r = get(bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = get("/debug/tasks/dump?format=text&seconds=30").await;
    if cfg!(feature = "taskdump") {
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        assert!(
            text.contains(&format!("7 tasks spawned at {parked_at}")),
            "{text}"
        );
    } else {
        assert_eq!(r.status, 404);
        assert!(r.text().contains("`taskdump` feature"), "{}", r.text());
    }
    for p in parked {
        p.abort();
    }
    agent.shutdown().await;
}
