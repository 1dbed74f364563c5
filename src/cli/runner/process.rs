//! The command run for a job: `sh -c EXEC` leading its own process group, the job JSON on
//! stdin, its stdout and stderr as lines, SIGINT to stop it gently and SIGKILL for its group.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use super::job::Job;

/// One line of output on its way to the server.
pub struct Line {
    pub level: &'static str,
    pub output: String,
}

/// A running command. Its fields are borrowed apart in one `select!` (wait for the exit while
/// taking lines).
pub struct Process {
    pub child: Child,
    pub lines: mpsc::Receiver<Line>,
    pid: Option<Pid>,
    exec: String,
    readers: JoinSet<()>,
    last_line: Arc<Mutex<String>>,
}

impl Process {
    pub fn spawn(exec: &str, job: &Job) -> std::io::Result<Self> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(exec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .envs(job.env());
        let mut child = cmd.spawn()?;
        let pid = child.id().map(|p| Pid::from_raw(p as i32));
        if let Some(mut stdin) = child.stdin.take() {
            let payload = job.stdin();
            tokio::spawn(async move {
                let _ = stdin.write_all(payload.as_bytes()).await;
            });
        }
        let (tx, lines) = mpsc::channel::<Line>(1024);
        let last_line = Arc::new(Mutex::new(String::new()));
        let mut readers = JoinSet::new();
        if let Some(out) = child.stdout.take() {
            readers.spawn(read_lines(out, "info", tx.clone(), last_line.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.spawn(read_lines(err, "warn", tx, last_line.clone()));
        }
        Ok(Self {
            child,
            lines,
            pid,
            exec: exec.to_string(),
            readers,
            last_line,
        })
    }

    /// Sends SIGINT to the command's process group, except to the `sh -c` wrapper while it is
    /// still the shell: a non-interactive `dash` dies of SIGINT at once, which would hide the
    /// command's own exit (a script that traps SIGINT and exits 0 would look "killed by signal
    /// 2"). The wrapper then exits with its command's status. Without `/proc` the whole group
    /// is signalled.
    pub fn interrupt(&self) {
        let Some(leader) = self.pid else { return };
        let Some(members) = group_members(leader.as_raw()) else {
            return self.signal(Signal::SIGINT);
        };
        let wrapper = format!("sh\0-c\0{}\0", self.exec);
        for member in members {
            if member == leader.as_raw()
                && std::fs::read(format!("/proc/{member}/cmdline")).ok()
                    == Some(wrapper.clone().into_bytes())
            {
                continue;
            }
            let _ = nix::sys::signal::kill(Pid::from_raw(member), Signal::SIGINT);
        }
    }

    /// SIGKILL for the whole process group.
    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid {
            // The command runs in its own process group: signal the whole group.
            let _ = nix::sys::signal::killpg(pid, sig);
        }
    }

    /// Waits until both output readers reached the end of their stream.
    pub async fn readers_done(&mut self) {
        while self.readers.join_next().await.is_some() {}
    }

    /// Why the command failed (`None` when it exited 0), with its last non-blank output line.
    pub async fn failure(&self, status: std::io::Result<ExitStatus>) -> Option<String> {
        let last = self.last_line.lock().await.clone();
        match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(describe_exit(s, &last)),
            Err(e) => Some(format!("waiting for the command failed: {e}")),
        }
    }
}

/// The processes of process group `pgid`, from `/proc` (None where there is no `/proc`).
fn group_members(pgid: i32) -> Option<Vec<i32>> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let pgrp = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(pgid) {
            members.push(pid);
        }
    }
    Some(members)
}

fn describe_exit(status: ExitStatus, last_line: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited abnormally".to_string(),
    };
    if last_line.is_empty() {
        how
    } else {
        format!("{how}: {last_line}")
    }
}

async fn read_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    level: &'static str,
    tx: mpsc::Sender<Line>,
    last: Arc<Mutex<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !line.trim().is_empty() {
            *last.lock().await = line.clone();
        }
        if tx
            .send(Line {
                level,
                output: line,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}
