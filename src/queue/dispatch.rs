//! Dispatch: a new job is offered to one waiting daemon that can run it, not to every waiting
//! daemon. Waiting daemons are grouped by what they can run (organization, provisioners, tags);
//! a hint carrying a new job's organization, provisioner and tags wakes the longest-waiting
//! daemon of a matching group, and only that one runs a claim. The others sleep on.
//!
//! Each group also remembers when its last claim found nothing more to run and whether any
//! matching hint arrived since ([`Group::generation`]). While nothing did, a daemon of that kind
//! arriving or polling skips its claim: with 1,000 idle daemons, a claim per arrival would cost
//! more than the jobs. Hints can be lost (a listener reconnecting, a job put back), so that
//! knowledge expires after [`BACKUP_POLL`] and waiters poll that often.
//!
//! A woken daemon that claims a job other than the one it was woken for (an older one) passes
//! the hint on; one that claims nothing stays quiet (another daemon or replica took the job).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::domain::job::Job;
use crate::domain::tags::Tags;
use crate::store::jobs::{Runnable, group_key};

/// How long "this kind of daemon has nothing to claim" is trusted without a claim, and how
/// often a waiting daemon looks for work without a hint.
pub const BACKUP_POLL: Duration = Duration::from_secs(5);

/// What a new job needs from a daemon: enough to pick a waiter that can run it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobHint {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub provisioner: String,
    pub tags: Tags,
}

impl JobHint {
    pub fn of(job: &Job) -> Self {
        Self {
            id: job.id,
            organization_id: job.organization_id,
            provisioner: job.provisioner.as_str().to_string(),
            tags: job.tags.clone(),
        }
    }

    fn runs_on(&self, r: &Runnable) -> bool {
        self.organization_id == r.organization_id
            && r.provisioners
                .iter()
                .any(|p| p.as_str() == self.provisioner)
            && self.tags.satisfied_by(&r.tags)
    }
}

/// Why a waiter was woken.
#[derive(Debug, Clone, PartialEq)]
pub enum Hint {
    /// A job it can run was enqueued.
    Job(JobHint),
    /// Something may have changed that no hint describes (lost notifications): look once.
    Any,
}

#[derive(Default)]
struct Slot {
    notify: Notify,
    hint: Mutex<Option<Hint>>,
}

struct Group {
    runnable: Runnable,
    /// Registered waiters, waiting or claiming.
    members: usize,
    /// Waiters asleep now, longest-waiting first: `(since, waiter id, slot)`.
    idle: VecDeque<(u64, u64, Arc<Slot>)>,
    /// Bumped by every hint this group could act on.
    generation: u64,
    /// The last claim that saw nothing more: the generation before it, and when.
    empty: Option<(u64, Instant)>,
}

impl Group {
    fn known_empty(&self) -> bool {
        self.empty
            .is_some_and(|(g, at)| g == self.generation && at.elapsed() < BACKUP_POLL)
    }
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Orders idle waiters (and names waiters) across groups.
    seq: u64,
}

/// The waiting daemons of this replica, by group.
#[derive(Default)]
pub struct Dispatcher {
    state: Mutex<State>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Registers a daemon that is about to claim and, failing that, wait.
    pub fn register(self: &Arc<Self>, runnable: &Runnable) -> Waiter {
        let key = group_key(runnable);
        let mut state = self.state.lock().expect("not poisoned");
        state.seq += 1;
        let id = state.seq;
        state
            .groups
            .entry(key.clone())
            .or_insert_with(|| Group {
                runnable: runnable.clone(),
                members: 0,
                idle: VecDeque::new(),
                generation: 0,
                empty: None,
            })
            .members += 1;
        Waiter {
            dispatcher: self.clone(),
            key,
            id,
            slot: Arc::new(Slot::default()),
        }
    }

    /// Offers a hint: a job hint to the longest-waiting daemon that can run it; `Any` to one
    /// waiter of every group.
    pub fn offer(&self, hint: Hint) {
        let mut state = self.state.lock().expect("not poisoned");
        let State { groups, .. } = &mut *state;
        groups.retain(|_, g| g.members > 0 || g.known_empty());
        match hint {
            Hint::Any => {
                for g in groups.values_mut() {
                    g.generation += 1;
                    g.empty = None;
                    if let Some((_, _, slot)) = g.idle.pop_front() {
                        wake(&slot, Hint::Any);
                    }
                }
            }
            Hint::Job(job) => {
                let mut best: Option<&mut Group> = None;
                for g in groups.values_mut() {
                    if !job.runs_on(&g.runnable) {
                        continue;
                    }
                    g.generation += 1;
                    let Some(&(since, _, _)) = g.idle.front() else {
                        continue;
                    };
                    if best
                        .as_ref()
                        .is_none_or(|b| b.idle.front().is_some_and(|f| since < f.0))
                    {
                        best = Some(g);
                    }
                }
                if let Some((_, _, slot)) = best.and_then(|g| g.idle.pop_front()) {
                    wake(&slot, Hint::Job(job));
                }
            }
        }
    }

    /// Daemons waiting now (for tests and the benchmark).
    pub fn idle_waiters(&self) -> usize {
        let state = self.state.lock().expect("not poisoned");
        state.groups.values().map(|g| g.idle.len()).sum()
    }
}

fn wake(slot: &Slot, hint: Hint) {
    *slot.hint.lock().expect("not poisoned") = Some(hint);
    slot.notify.notify_one();
}

/// One claim attempt: whether to run it, and the group's generation before it.
#[derive(Debug)]
pub struct Attempt {
    pub claim: bool,
    generation: u64,
    hint: Option<Hint>,
}

/// A registered daemon; dropping it deregisters it and passes on a hint it did not use.
pub struct Waiter {
    dispatcher: Arc<Dispatcher>,
    key: String,
    id: u64,
    slot: Arc<Slot>,
}

impl Waiter {
    fn with_group<T>(&self, f: impl FnOnce(&mut Group, u64) -> T) -> T {
        let mut state = self.dispatcher.state.lock().expect("not poisoned");
        state.seq += 1;
        let seq = state.seq;
        let group = state.groups.get_mut(&self.key).expect("members keep it");
        f(group, seq)
    }

    /// Starts an attempt: claim if woken by a hint, or unless this kind of daemon is known to
    /// have nothing to run.
    pub fn begin(&self) -> Attempt {
        let hint = self.slot.hint.lock().expect("not poisoned").take();
        self.with_group(|g, _| Attempt {
            claim: hint.is_some() || !g.known_empty(),
            generation: g.generation,
            hint,
        })
    }

    /// Ends an attempt that claimed `got` and saw `more` runnable jobs: records that this kind
    /// of daemon has nothing left, and passes on a hint for a job it did not get.
    pub fn end(&self, attempt: &mut Attempt, got: &[Uuid], more: bool) {
        let hint = attempt.hint.take();
        let pass_on = match hint {
            Some(Hint::Job(h)) if !got.is_empty() && !got.contains(&h.id) => Some(Hint::Job(h)),
            _ => None,
        };
        if attempt.claim && !more {
            let generation = attempt.generation;
            self.with_group(|g, _| g.empty = Some((generation, Instant::now())));
        }
        if let Some(hint) = pass_on {
            self.dispatcher.offer(hint);
        }
    }

    /// Goes to sleep unless a hint arrived since `attempt` began; the returned future resolves
    /// when this waiter is offered a hint. `None`: look again now.
    pub fn sleep(&self, attempt: &Attempt) -> Option<tokio::sync::futures::Notified<'_>> {
        let notified = self.slot.notify.notified();
        let id = self.id;
        let slot = self.slot.clone();
        let asleep = self.with_group(|g, seq| {
            if g.generation != attempt.generation {
                return false;
            }
            g.idle.push_back((seq, id, slot));
            true
        });
        asleep.then_some(notified)
    }

    /// Stops waiting (timer, shutdown, hint): leaves the idle queue if still in it.
    pub fn wake_up(&self) {
        let id = self.id;
        self.with_group(|g, _| g.idle.retain(|(_, w, _)| *w != id));
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let id = self.id;
        self.with_group(|g, _| {
            g.idle.retain(|(_, w, _)| *w != id);
            g.members -= 1;
        });
        // Woken but gone before claiming: another daemon gets the hint.
        let unused = self.slot.hint.lock().expect("not poisoned").take();
        if let Some(hint @ Hint::Job(_)) = unused {
            self.dispatcher.offer(hint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::Provisioner;

    fn runnable(org: Uuid, tags: &[(&str, &str)]) -> Runnable {
        Runnable {
            organization_id: org,
            provisioners: vec![Provisioner::Terraform],
            tags: Tags::normalize(
                tags.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                None,
            )
            .unwrap(),
        }
    }

    fn hint(org: Uuid, r: &Runnable) -> Hint {
        Hint::Job(JobHint {
            id: Uuid::new_v4(),
            organization_id: org,
            provisioner: "terraform".into(),
            tags: r.tags.clone(),
        })
    }

    #[tokio::test]
    async fn a_hint_wakes_one_matching_waiter_only() {
        let d = Arc::new(Dispatcher::default());
        let org = Uuid::new_v4();
        let a = runnable(org, &[("pool", "a")]);
        let b = runnable(org, &[("pool", "b")]);
        let waiters: Vec<Waiter> = (0..10)
            .map(|i| d.register(if i % 2 == 0 { &a } else { &b }))
            .collect();
        let mut asleep = Vec::new();
        for w in &waiters {
            let mut attempt = w.begin();
            w.end(&mut attempt, &[], false);
            let attempt = w.begin();
            assert!(!attempt.claim, "known empty: no claim");
            asleep.push(w.sleep(&attempt).expect("nothing arrived"));
        }
        assert_eq!(d.idle_waiters(), 10);
        d.offer(hint(org, &b));
        assert_eq!(d.idle_waiters(), 9);
        let woken: Vec<usize> = waiters
            .iter()
            .enumerate()
            .filter(|(_, w)| w.slot.hint.lock().unwrap().is_some())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(woken, [1], "the longest-waiting `b` waiter, nobody else");
        // A job of another organization wakes nobody.
        d.offer(hint(Uuid::new_v4(), &a));
        assert_eq!(d.idle_waiters(), 9);
    }
}
