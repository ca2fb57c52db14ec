//! The target never outlives leakscope.
//!
//! Why a second process: leakscope may die by SIGKILL, or with its terminal
//! (SIGHUP), and then none of its code runs. `PR_SET_PDEATHSIG` would reach
//! only the target's leader (and fires when the spawning *thread* ends), not
//! what the leader started in its process group. So a tiny guard, `sh` in a
//! session of its own, reads a pipe whose write end only leakscope holds.
//! When leakscope is gone, however it went, the pipe reads end-of-file and
//! the guard stops the whole group: SIGTERM, then SIGKILL 2 s later. A
//! leakscope that stopped the group itself says `done` first, and the guard
//! leaves quietly.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

/// HUP, INT and TERM are ignored: a closed terminal or a Ctrl-C that ends
/// leakscope must not end its guard first.
const SCRIPT: &str = r#"trap '' HUP INT TERM PIPE
while IFS= read -r line; do [ "$line" = done ] && exit 0; done
kill -s TERM -- "-$1" 2>/dev/null || exit 0
sleep 2
kill -s KILL -- "-$1" 2>/dev/null
exit 0"#;

pub struct Guard {
    /// Dropping it (leakscope ending without [`Guard::release`]) is the
    /// signal.
    pipe: Option<ChildStdin>,
    child: Child,
}

impl Guard {
    /// Starts a guard over process group `group`.
    pub fn watch(group: u32) -> std::io::Result<Guard> {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", SCRIPT, "leakscope-guard", &group.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            cmd.pre_exec(|| rustix::process::setsid().map(|_| ()).map_err(Into::into));
        }
        let mut child = cmd.spawn()?;
        Ok(Guard {
            pipe: child.stdin.take(),
            child,
        })
    }

    /// The group is stopped: the guard exits without a signal.
    pub fn release(mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"done\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Closing the pipe without `done` makes the guard stop the group;
        // it is reaped (or inherited by init) once it has.
        drop(self.pipe.take());
        let _ = self.child.try_wait();
    }
}
