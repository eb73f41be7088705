//! The proxy as a local process: its workdir `.zenith/proxy/` with
//! `proxy.toml`, the local certificate authority and the wildcard server
//! certificate made by `zenith init`, start and stop.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use zenith_utils::auth::{Scope, AUTH_TOKEN_ENV};
use zenith_utils::crashsafe;

use crate::background_process::{self, Daemon, Stopped};
use crate::local_env::LocalEnv;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The CA certificate clients trust (`sslrootcert`).
pub const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";

pub struct ProxyNode<'a> {
    pub env: &'a LocalEnv,
}

impl<'a> ProxyNode<'a> {
    pub fn new(env: &'a LocalEnv) -> Self {
        ProxyNode { env }
    }

    pub fn workdir(&self) -> PathBuf {
        self.env.base_dir.join("proxy")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.workdir().join("proxy.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.workdir().join("proxy.log")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.workdir().join(CA_CERT_FILE)
    }

    pub fn pid(&self) -> anyhow::Result<Option<i32>> {
        background_process::running_pid(&self.pid_file())
    }

    /// `zenith init`: the workdir, a local CA and a certificate for
    /// `*.<domain>` signed by it, and `proxy.toml`.
    pub fn init(&self) -> anyhow::Result<()> {
        let dir = self.workdir();
        crashsafe::create_dir_all_durable(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let domain = &self.env.proxy.domain;
        let (ca_pem, ca_key, cert_pem, key_pem) = make_certificates(domain)?;
        let write_secret = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
            let path = dir.join(name);
            crashsafe::write_file_atomic(&path, bytes)
                .with_context(|| format!("writing {}", path.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(())
        };
        write_secret(CA_KEY_FILE, ca_key.as_bytes())?;
        write_secret(SERVER_KEY_FILE, key_pem.as_bytes())?;
        crashsafe::write_file_atomic(dir.join(CA_CERT_FILE), ca_pem.as_bytes())?;
        crashsafe::write_file_atomic(dir.join(SERVER_CERT_FILE), cert_pem.as_bytes())?;
        let conf = format!(
            "# The proxy's configuration; written by `zenith init`.\n\
             listen_pg = \"{}\"\n\
             listen_http = \"{}\"\n\
             console_url = \"http://{}\"\n\
             domain = \"{domain}\"\n\
             tls_cert = \"{}\"\n\
             tls_key = \"{}\"\n",
            self.env.proxy.listen_pg_addr,
            self.env.proxy.listen_http_addr,
            self.env.console.listen_http_addr,
            dir.join(SERVER_CERT_FILE).display(),
            dir.join(SERVER_KEY_FILE).display(),
        );
        crashsafe::write_file_atomic(dir.join("proxy.toml"), conf.as_bytes())?;
        Ok(())
    }

    pub fn check_ports_free(&self) -> anyhow::Result<()> {
        let remedy = "set other [proxy] addresses in the repository's config";
        background_process::check_port_free(self.env.proxy.listen_pg_addr, "proxy", remedy)?;
        background_process::check_port_free(self.env.proxy.listen_http_addr, "proxy HTTP", remedy)
    }

    pub fn start(&self) -> anyhow::Result<i32> {
        if !self.workdir().join("proxy.toml").exists() {
            // A repository from before the proxy: make its files now.
            self.init()?;
        }
        self.check_ports_free()?;
        let mut args = vec![
            "-D".into(),
            self.workdir().display().to_string(),
            "--log-format".into(),
            self.env.log_format.to_string(),
        ];
        let mut envs = vec![];
        if let Some(token) = self.env.scoped_token(Scope::ControlPlane, None)? {
            // Its API checks tokens; its calls to the console carry one.
            args.extend([
                "-c".into(),
                "auth_type='ZenithJWT'".into(),
                "-c".into(),
                format!(
                    "auth_validation_public_key_path='{}'",
                    self.env.auth_public_key_path().display()
                ),
            ]);
            envs.push((AUTH_TOKEN_ENV.to_string(), token));
        }
        let d = Daemon {
            name: "proxy",
            program: &self.env.zenith_bin("proxy"),
            args,
            envs,
            log_file: self.log_file(),
            pid_file: self.pid_file(),
        };
        let http = self.env.proxy.listen_http_addr;
        let pg = self.env.proxy.listen_pg_addr;
        background_process::start_daemon(&d, START_TIMEOUT, || {
            background_process::port_answers(pg) && background_process::port_answers(http)
        })
    }

    pub fn stop(&self, immediate: bool) -> anyhow::Result<Stopped> {
        background_process::stop_daemon(&self.pid_file(), immediate, STOP_TIMEOUT)
    }

    /// How to connect to an endpoint through the proxy, verifying its
    /// certificate (libpq connection string).
    pub fn connstr(&self, endpoint: &str, user: &str, dbname: &str) -> String {
        format!(
            "host={endpoint}.{} hostaddr={} port={} user={user} dbname={dbname} sslmode=verify-full sslrootcert={}",
            self.env.proxy.domain,
            self.env.proxy.listen_pg_addr.ip(),
            self.env.proxy.listen_pg_addr.port(),
            self.ca_cert().display()
        )
    }
}

/// A local CA and a server certificate for `*.<domain>` and `<domain>`:
/// (CA cert, CA key, server cert, server key), PEM.
pub fn make_certificates(domain: &str) -> anyhow::Result<(String, String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Zenith local CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec![format!("*.{domain}"), domain.to_string()])
        .context("server certificate parameters")?;
    server
        .distinguished_name
        .push(DnType::CommonName, format!("*.{domain}"));
    server.use_authority_key_identifier_extension = true;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().context("generating the server key")?;
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;
    Ok((
        ca_cert.pem(),
        ca_key_pem,
        server_cert.pem(),
        server_key.serialize_pem(),
    ))
}
