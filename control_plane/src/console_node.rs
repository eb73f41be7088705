//! The console as a local process (`.zenith/console/`), and the CLI's
//! client of its API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use zenith_utils::api::console::{
    DatabaseInfo, EndpointAuth, EndpointCreateRequest, EndpointInfo, RoleCreateRequest,
    PID_FILE_NAME,
};
use zenith_utils::auth::Scope;
use zenith_utils::crashsafe;

use crate::background_process::{self, Daemon, Stopped};
use crate::local_env::LocalEnv;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ConsoleNode<'a> {
    pub env: &'a LocalEnv,
    http: ureq::Agent,
}

impl<'a> ConsoleNode<'a> {
    pub fn new(env: &'a LocalEnv) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        ConsoleNode { env, http }
    }

    pub fn workdir(&self) -> PathBuf {
        self.env.base_dir.join("console")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.workdir().join(PID_FILE_NAME)
    }

    pub fn log_file(&self) -> PathBuf {
        self.workdir().join("console.log")
    }

    pub fn pid(&self) -> anyhow::Result<Option<i32>> {
        background_process::running_pid(&self.pid_file())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.env.console.listen_http_addr)
    }

    pub fn check_ports_free(&self) -> anyhow::Result<()> {
        background_process::check_port_free(
            self.env.console.listen_http_addr,
            "console",
            "set another [console] listen_http_addr in the repository's config",
        )
    }

    pub fn start(&self) -> anyhow::Result<i32> {
        crashsafe::create_dir_all_durable(self.workdir())?;
        self.check_ports_free()?;
        let d = Daemon {
            name: "console",
            program: &self.env.zenith_bin("console"),
            args: vec![
                "--repo".into(),
                self.env.base_dir.display().to_string(),
                "--log-format".into(),
                self.env.log_format.to_string(),
            ],
            envs: vec![],
            log_file: self.log_file(),
            pid_file: self.pid_file(),
        };
        let addr = self.env.console.listen_http_addr;
        background_process::start_daemon(&d, START_TIMEOUT, || {
            background_process::port_answers(addr)
        })
    }

    pub fn stop(&self, immediate: bool) -> anyhow::Result<Stopped> {
        background_process::stop_daemon(&self.pid_file(), immediate, STOP_TIMEOUT)
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.url());
        let bearer = self.env.bearer(Scope::ControlPlane, None)?;
        let resp = match (method, body) {
            ("GET", _) => crate::with_bearer(self.http.get(&url), bearer.as_deref()).call(),
            ("DELETE", _) => crate::with_bearer(self.http.delete(&url), bearer.as_deref()).call(),
            ("POST", Some(b)) => {
                crate::with_bearer(self.http.post(&url), bearer.as_deref()).send_json(b)
            }
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Io(_)) | Err(ureq::Error::ConnectionFailed) => bail!(
                "the console is not running (cannot connect to {}): start it with `zenith start`",
                self.env.console.listen_http_addr
            ),
            Err(e) => return Err(anyhow!(e).context(format!("{method} {url}"))),
        };
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the console's answer")?;
        if !(200..300).contains(&status) {
            let msg = zenith_utils::http::error_message(text);
            bail!("{msg}");
        }
        serde_json::from_str(&text).context("decoding the console's answer")
    }

    pub fn endpoint_create(
        &self,
        name: &str,
        branch: &str,
        auth: EndpointAuth,
        suspend_timeout_ms: Option<u64>,
    ) -> anyhow::Result<EndpointInfo> {
        let req = EndpointCreateRequest {
            name: name.into(),
            branch: branch.into(),
            tenant_id: self.env.default_tenant_id,
            auth,
            suspend_timeout_ms,
        };
        self.request("POST", "/v1/endpoints", Some(serde_json::to_value(req)?))
    }

    pub fn endpoint_list(&self) -> anyhow::Result<Vec<EndpointInfo>> {
        self.request("GET", "/v1/endpoints", None)
    }

    pub fn endpoint_delete(&self, name: &str) -> anyhow::Result<()> {
        let _: serde_json::Value =
            self.request("DELETE", &format!("/v1/endpoints/{name}"), None)?;
        Ok(())
    }

    pub fn role_create(&self, endpoint: &str, name: &str, password: &str) -> anyhow::Result<()> {
        let req = RoleCreateRequest {
            name: name.into(),
            password: password.into(),
        };
        let _: serde_json::Value = self.request(
            "POST",
            &format!("/v1/endpoints/{endpoint}/roles"),
            Some(serde_json::to_value(req)?),
        )?;
        Ok(())
    }

    pub fn db_create(&self, endpoint: &str, name: &str, owner: &str) -> anyhow::Result<()> {
        let req = DatabaseInfo {
            name: name.into(),
            owner: owner.into(),
        };
        let _: serde_json::Value = self.request(
            "POST",
            &format!("/v1/endpoints/{endpoint}/databases"),
            Some(serde_json::to_value(req)?),
        )?;
        Ok(())
    }
}
