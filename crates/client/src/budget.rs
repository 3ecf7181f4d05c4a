//! A retry budget (as in Finagle and gRPC's retry throttling): every call deposits `ratio`
//! of a token, every retry withdraws one, so retries add at most `ratio` extra load however
//! badly the callee fails; `min_tokens` lets a quiet client still retry a little.

use std::sync::Mutex;

#[derive(Debug)]
pub struct RetryBudget {
    tokens: Mutex<f64>,
    ratio: f64,
    max_tokens: f64,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_tokens: f64) -> Self {
        let ratio = ratio.clamp(0.0, 1.0);
        Self {
            tokens: Mutex::new(min_tokens),
            ratio,
            max_tokens: min_tokens.max(10.0),
        }
    }

    /// Called once per original call.
    pub fn deposit(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t + self.ratio).min(self.max_tokens);
    }

    /// Called before each retry; `false` means: do not retry.
    pub fn try_withdraw(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_the_ratio() {
        let b = RetryBudget::new(0.2, 0.0);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            while b.try_withdraw() {
                retries += 1;
            }
        }
        assert!((195..=200).contains(&retries), "{retries}");
    }
}
