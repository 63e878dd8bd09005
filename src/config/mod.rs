//! Configuration: the `Settings` tree (`settings`), one file per group of sections
//! (`server`, `serving`, `signing`, `admin`, `web`, `observe`), each section validating
//! itself (`section`); `load` does the figment layers, the rule lists across layers, where
//! every value came from (`provenance`) and error text.
//!
//! Every error names where the bad value came from (file path, environment variable, flag or
//! the embedded defaults), the key and the reason, so startup fails fast and legibly.
//! Secrets must never be printed: `Settings::redacted` is what `check-config` shows.

mod admin;
mod load;
mod observe;
mod provenance;
mod section;
mod server;
mod serving;
mod settings;
mod signing;
mod storage;
mod web;

pub use self::admin::{
    AdminSettings, CdnKind, CloudflarePurgeSettings, InvalidationSettings, PurgeBy,
};
pub use self::load::{
    key_notation, load, ConfigError, Overrides, DEFAULT_CONFIG_FILE, EMBEDDED_DEFAULTS, ENV_PREFIX,
};
pub use self::observe::{AccessFormat, LogFormat, LogSettings, MetricsSettings};
pub use self::provenance::Provenance;
pub use self::section::{Secret, Section};
pub use self::server::{parse_listen, LimitSettings, ProxySettings, ServerSettings, TlsSettings};
pub use self::serving::{
    AssetSettings, CacheSettings, MetadataSettings, RangeSettings, StreamingSettings,
};
pub use self::settings::Settings;
pub use self::signing::{
    AccessSettings, AkamaiSettings, CloudflareSettings, CloudfrontSettings, HashName, SigningParts,
    SigningSettings,
};
pub use self::storage::{BackendKind, S3Settings, StorageSettings};
pub use self::web::{CorsSettings, OriginProtectionSettings, PlayerSettings};

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;
    use std::path::Path;

    #[allow(clippy::result_large_err)] // figment's Jail closure type, test-only
    fn load_in_jail(
        files: &[(&str, &str)],
        env: &[(&str, &str)],
        o: Overrides,
    ) -> Result<Settings, ConfigError> {
        let mut out = None;
        Jail::expect_with(|jail| {
            for (name, body) in files {
                if let Some(dir) = Path::new(name).parent() {
                    std::fs::create_dir_all(jail.directory().join(dir)).unwrap();
                }
                jail.create_file(name, body)?;
            }
            for (k, v) in env {
                jail.set_env(k, v);
            }
            out = Some(load(&o));
            Ok(())
        });
        out.unwrap()
    }

    #[test]
    fn embedded_defaults_load() {
        let s = load_in_jail(&[], &[], Overrides::default()).unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.assets.mount, "/video");
        assert_eq!(s.ranges.max_ranges, 16);
    }

    #[test]
    fn layers_override_in_order() {
        let s = load_in_jail(
            &[(
                "config/origin.toml",
                "[ranges]\nmax_ranges = 4\ncoalesce_gap = 0\n",
            )],
            &[("VIDEO_ORIGIN_RANGES__MAX_RANGES", "8")],
            Overrides {
                listen: Some("127.0.0.1:9999".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.ranges.max_ranges, 8, "env beats file");
        assert_eq!(s.ranges.coalesce_gap, 0, "file beats defaults");
        assert_eq!(s.server.listen.port(), 9999, "flag beats all");
    }

    #[test]
    fn errors_name_source_key_and_reason() {
        let e = load_in_jail(
            &[("config/origin.toml", "[ranges]\nmax_ranges = \"many\"\n")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.source.ends_with("config/origin.toml"), "{e}");
        assert_eq!(e.key, "ranges.max_ranges");
        assert!(e.reason.contains("string"), "{e}");

        let e = load_in_jail(
            &[("config/origin.toml", "[ranges]\nmax_rangez = 3\n")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "ranges.max_rangez");
        assert!(e.reason.contains("unknown key"), "{e}");

        let e = load_in_jail(
            &[],
            &[("VIDEO_ORIGIN_STREAMING__READ_SIZE", "12")],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "streaming.read_size");
        assert!(
            e.source.contains("VIDEO_ORIGIN_STREAMING__READ_SIZE"),
            "{e}"
        );

        let e = load_in_jail(
            &[(
                "config/origin.toml",
                "[streaming]
memory_copy_max_file = 2147483648
",
            )],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "streaming.memory_copy_max_file");
        assert!(e.reason.contains("at most 1073741824"), "{e}");

        let e = load_in_jail(
            &[(
                "my.toml",
                "[cache]\nfile_cache_control = \"no-store, max-age=5\"\n",
            )],
            &[],
            Overrides {
                config_file: Some("my.toml".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.key, "cache.file_cache_control");
        assert!(e.source.ends_with("my.toml"), "{e}");

        let e = load_in_jail(
            &[],
            &[],
            Overrides {
                config_file: Some("absent.toml".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("not found"), "{e}");

        let e = load_in_jail(
            &[("config/origin.toml", "[assets]\nmount = \"video\"\n")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(e.key, "assets.mount");

        let e = load_in_jail(
            &[("config/origin.toml", "this is not toml")],
            &[],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(e.source.ends_with("config/origin.toml"), "{e}");
    }
}
