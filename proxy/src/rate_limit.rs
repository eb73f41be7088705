//! Failed authentications per endpoint and role: after
//! `max_auth_failures` within the window, further attempts are refused
//! without being tried until the oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct AuthRateLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
}

impl AuthRateLimiter {
    pub fn new(max: u32, window: Duration) -> AuthRateLimiter {
        AuthRateLimiter {
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(wait)`: refused, try again after `wait`.
    pub fn check(&self, endpoint: &str, role: &str) -> Result<(), Duration> {
        self.check_at(endpoint, role, Instant::now())
    }

    fn check_at(&self, endpoint: &str, role: &str, now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let key = (endpoint.to_string(), role.to_string());
        let Some(q) = map.get_mut(&key) else {
            return Ok(());
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.is_empty() {
            map.remove(&key);
            return Ok(());
        }
        if q.len() as u32 >= self.max {
            let oldest = q.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    /// Records a failed authentication.
    pub fn failed(&self, endpoint: &str, role: &str) {
        self.failed_at(endpoint, role, Instant::now())
    }

    fn failed_at(&self, endpoint: &str, role: &str, now: Instant) {
        let mut map = self.lock();
        // Bound the memory an attacker can make us use.
        if map.len() > 100_000 {
            map.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.duration_since(*t) < self.window)
            });
        }
        let q = map
            .entry((endpoint.to_string(), role.to_string()))
            .or_default();
        q.push_back(now);
        while q.len() as u32 > self.max {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_failures_until_the_window_passes() {
        let l = AuthRateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.check_at("ep", "alice", t0).is_ok(), "attempt {i}");
            l.failed_at("ep", "alice", t0);
        }
        let wait = l
            .check_at("ep", "alice", t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Other roles and endpoints are not affected.
        assert!(l.check_at("ep", "bob", t0).is_ok());
        assert!(l.check_at("ep2", "alice", t0).is_ok());
        assert!(l
            .check_at("ep", "alice", t0 + Duration::from_secs(60))
            .is_ok());
    }
}
