//! The `nomyo serve` flags as a configuration layer: the same typed
//! configuration as the TOML file, holding only what was given.

use nomyo_server::config::{
    AttestationConfig, BackendConfig, BackendKind, ClusterConfig, FileConfig, HpkeConfig,
    LimitsConfig,
};

use super::Args;

impl Args {
    /// The flags as a configuration layer (only what was given).
    pub(super) fn as_config(&self) -> FileConfig {
        let backends = if self.upstream.is_empty() {
            None
        } else {
            // One URL: a plain upstream, as always; several: one pool.
            let (url, urls) = match &self.upstream[..] {
                [one] => (Some(one.clone()), None),
                many => (None, Some(many.to_vec())),
            };
            Some(vec![BackendConfig {
                name: "upstream".to_owned(),
                kind: BackendKind::Upstream,
                url,
                urls,
                endpoints: None,
                max_concurrency_per_endpoint: self.upstream_max_concurrency,
                health_check_interval_secs: self.upstream_health_interval,
                breaker_failures: None,
                breaker_cooldown_secs: None,
                api_key_file: self.upstream_api_key_file.clone(),
                api_key_env: self.upstream_api_key_env.clone(),
                models: (!self.upstream_model.is_empty()).then(|| self.upstream_model.clone()),
                timeout_secs: self.upstream_timeout,
                connect_timeout_secs: None,
                model: None,
                threads: None,
                context: None,
                parallel: None,
            }])
        };
        FileConfig {
            listen: self
                .listen
                .clone()
                .or_else(|| self.port.map(|p| format!("127.0.0.1:{p}"))),
            key_dir: self.key_dir.clone(),
            key_password_file: self.key_password_file.clone(),
            key_password_env: self.key_password_env.clone(),
            key_bits: self.key_bits,
            no_password: self.no_password.then_some(true),
            ephemeral_key: self.ephemeral_key.then_some(true),
            key_grace_secs: self.key_grace,
            api_key_file: self.exposure.api_key_file.clone(),
            api_key_hashes: (!self.exposure.api_key_hash.is_empty())
                .then(|| self.exposure.api_key_hash.clone()),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            metrics: self.no_metrics.then_some(false),
            metrics_token_file: self.exposure.metrics_token_file.clone(),
            metrics_token_env: self.exposure.metrics_token_env.clone(),
            trusted_proxies: (!self.exposure.trusted_proxy.is_empty())
                .then(|| self.exposure.trusted_proxy.clone()),
            allowed_hosts: (!self.exposure.allowed_host.is_empty())
                .then(|| self.exposure.allowed_host.clone()),
            shutdown_grace_secs: self.shutdown_grace,
            model: self.model.clone(),
            threads: self.threads,
            context: self.context,
            parallel: self.parallel.map(usize::from),
            limits: LimitsConfig {
                max_body_bytes: self.limits.max_body_bytes,
                max_concurrency: self.limits.max_concurrency,
                max_queue: self.limits.max_queue,
                queue_timeout_secs: self.limits.queue_timeout,
                request_timeout_secs: self.limits.request_timeout,
                body_timeout_secs: None,
                max_buffered_body_bytes: None,
                rate_limit_per_minute: self.exposure.rate_limit,
                rate_limit_burst: self.exposure.rate_burst,
                replay_window_secs: self.limits.replay_window,
                replay_max_entries: None,
                replay_share_percent: None,
                replay_journal: self.limits.replay_journal.clone(),
                stream_idle_timeout_secs: None,
                stream_write_timeout_secs: None,
            },
            hpke: HpkeConfig {
                rotate_every: self.hpke_rotate_every.clone(),
                grace: self.hpke_grace.clone(),
            },
            cluster: ClusterConfig {
                key_reload_every: self.cluster.key_reload_every.clone(),
                replay_redis_url: self.cluster.replay_redis_url.clone(),
                replay_redis_url_env: self.cluster.replay_redis_url_env.clone(),
                replay_redis_prefix: None,
            },
            backends,
            tiers: None,
            attestation: AttestationConfig {
                tpm: self.tpm.clone().filter(|t| !t.is_empty()),
                source: self.attestation.clone(),
                tsm_dir: self.tsm_dir.clone(),
                queue: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use nomyo_server::config::BackendSpec;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn backends(argv: &[&str]) -> Vec<BackendSpec> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .expect("flags parse");
        cli.args.as_config().resolve().expect("resolves").backends
    }

    #[test]
    fn one_upstream_stays_plain_and_several_form_one_pool() {
        let one = backends(&["--upstream", "http://127.0.0.1:1/v1"]);
        assert!(matches!(&one[..], [BackendSpec::Upstream { name, .. }] if name == "upstream"));
        let two = backends(&[
            "--upstream",
            "http://127.0.0.1:1/v1",
            "--upstream",
            "http://127.0.0.1:2/v1",
            "--upstream-max-concurrency",
            "3",
        ]);
        match &two[..] {
            [BackendSpec::Pool { name, config }] => {
                assert_eq!(name, "upstream");
                assert_eq!(config.endpoints.len(), 2);
                assert_eq!(config.endpoints[1].url, "http://127.0.0.1:2/v1");
                assert_eq!(config.max_concurrency_per_endpoint, 3);
            }
            other => panic!("expected one pool, got {other:?}"),
        }
    }
}
