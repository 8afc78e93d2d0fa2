//! Periodic housekeeping of a running state: the 1 s tick that erases
//! retired keys and idle rate-limit state and renews the key-list
//! signature, and the schedules of HPKE rotation and key-directory reload.

use std::time::Duration;

use super::AppState;

impl AppState {
    /// Periodic housekeeping: drops retired keys past their grace period and
    /// idle rate-limit state, and rotates the HPKE keys on their schedule.
    /// Runs until the returned task is aborted.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let st = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let every = st.inner.hpke_rotate_every;
            let mut rotation = every.map(|d| {
                // Saved keys loaded at start are as old as their file.
                let first = d.saturating_sub(st.inner.hpke.current_age());
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + first, d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            let mut reload = st.inner.key_reload_every.map(|d| {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            });
            loop {
                let follow = async {
                    match reload.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                let rotate = async {
                    match rotation.as_mut() {
                        Some(i) => {
                            i.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rotate => {
                        if let Err(e) = st.rotate_hpke_keys().await {
                            tracing::error!(error = %e, "scheduled HPKE key rotation failed; keeping the current keys");
                        }
                        continue;
                    }
                    _ = follow => {
                        if let Err(e) = st.reload_keys().await {
                            tracing::error!(error = %e, "reloading the key directory failed; keeping the current keys");
                        }
                        continue;
                    }
                }
                st.inner.hpke.purge_expired();
                let dropped = st.inner.keys.purge_expired();
                if dropped > 0 {
                    tracing::info!(
                        dropped,
                        "retired server keys erased after their grace period"
                    );
                }
                if let Some(r) = &st.inner.rate {
                    r.retain_recent();
                }
                st.renew_signed_keys_if_due().await;
            }
        })
    }
}
