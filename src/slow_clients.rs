//! Deadlines for slow clients at the socket level, where hyper (as poem runs it) sets none: a
//! client that opened a connection or started a request must finish the request's header block
//! within `header_read_timeout_secs`, and a keep-alive connection between requests is closed
//! after `idle_timeout_secs`. Once a request's headers are in, no deadline runs here until its
//! response starts, so long-polls and WebSockets are never cut; body uploads are timed by the
//! request-limits middleware instead (`api::limits`).
//!
//! The clock follows HTTP/1.1 framing just enough: the end of a header block is the first
//! `\r\n\r\n` after the request started, and a response starts with `HTTP/1.x` and a non-1xx
//! status (`100 Continue` and `101 Switching Protocols` keep the request in flight).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::RequestLimitSettings;

/// The two socket deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub header: Duration,
    pub idle: Duration,
}

impl Deadlines {
    pub fn from_settings(limits: &RequestLimitSettings) -> Self {
        Self {
            header: Duration::from_secs(limits.header_read_timeout_secs),
            idle: Duration::from_secs(limits.idle_timeout_secs),
        }
    }
}

impl Default for Deadlines {
    fn default() -> Self {
        Self::from_settings(&RequestLimitSettings::default())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: the idle deadline runs.
    Idle,
    /// A request's header block is arriving: the header deadline runs.
    Headers,
    /// Headers in, response not started: no deadline.
    Busy,
}

const END_OF_HEADERS: &[u8; 4] = b"\r\n\r\n";

/// Where one connection stands; fed every byte read and written.
pub struct ConnectionClock {
    deadlines: Deadlines,
    phase: Phase,
    /// How many bytes of `END_OF_HEADERS` the last bytes read matched.
    matched: usize,
    timer: Pin<Box<Sleep>>,
}

impl ConnectionClock {
    /// A new connection must send its first request's headers in time.
    pub fn new(deadlines: Deadlines) -> Self {
        Self {
            deadlines,
            phase: Phase::Headers,
            matched: 0,
            timer: Box::pin(tokio::time::sleep(deadlines.header)),
        }
    }

    /// `Ready(error)` once the running deadline has passed: the read fails and hyper drops the
    /// connection.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.phase == Phase::Busy {
            return Poll::Pending;
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let what = if self.phase == Phase::Headers {
                    "request headers not received in time"
                } else {
                    "idle connection timed out"
                };
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, what))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    pub fn on_read(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Headers;
            self.matched = 0;
            self.restart(self.deadlines.header);
        }
        if self.phase != Phase::Headers {
            return;
        }
        for &b in data {
            self.matched = if b == END_OF_HEADERS[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            if self.matched == END_OF_HEADERS.len() {
                self.phase = Phase::Busy;
                return;
            }
        }
    }

    pub fn on_write(&mut self, data: &[u8]) {
        match self.phase {
            Phase::Busy if starts_final_response(data) => {
                self.phase = Phase::Idle;
                self.restart(self.deadlines.idle);
            }
            // A response body still going out is activity.
            Phase::Idle if !data.is_empty() => self.restart(self.deadlines.idle),
            _ => {}
        }
    }

    fn restart(&mut self, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
    }
}

/// `HTTP/1.1 200 …` yes, `HTTP/1.1 100 Continue` / `101 Switching Protocols` no.
fn starts_final_response(data: &[u8]) -> bool {
    data.len() > 9 && data.starts_with(b"HTTP/1.") && data[9] != b'1'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> ConnectionClock {
        ConnectionClock::new(Deadlines {
            header: Duration::from_secs(1),
            idle: Duration::from_secs(2),
        })
    }

    #[tokio::test]
    async fn headers_split_across_reads_are_recognised() {
        let mut c = clock();
        c.on_read(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(c.phase, Phase::Headers);
        c.on_read(b"\n\r");
        c.on_read(b"\n");
        assert_eq!(c.phase, Phase::Busy);
    }

    #[tokio::test]
    async fn informational_responses_keep_the_request_in_flight() {
        let mut c = clock();
        c.on_read(b"POST / HTTP/1.1\r\n\r\n");
        c.on_write(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(c.phase, Phase::Busy);
        c.on_write(b"HTTP/1.1 201 Created\r\n");
        assert_eq!(c.phase, Phase::Idle);
        c.on_read(b"G");
        assert_eq!(c.phase, Phase::Headers);
    }
}
