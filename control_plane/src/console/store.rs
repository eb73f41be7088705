//! The console's state file, `console.json`: endpoints and their roles.
//! Written whole, atomically (temp file, fsync, rename, fsync of the
//! directory), mode 0600: it holds the roles' SCRAM keys.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use zenith_utils::api::console::{EndpointAuth, STATE_FILE_NAME};
use zenith_utils::crashsafe;
use zenith_utils::id::TenantId;

use super::ConsoleError;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    /// SCRAM-SHA-256 secret as in `pg_authid`.
    pub secret: String,
    /// The role's SCRAM keys (hex), for link-auth logins by the proxy.
    pub client_key: String,
    pub server_key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Also the name of its compute.
    pub name: String,
    pub tenant_id: TenantId,
    pub branch: String,
    pub auth: EndpointAuth,
    pub suspend_timeout_ms: u64,
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct StateFile {
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

pub struct Store {
    workdir: PathBuf,
    state: StateFile,
}

impl Store {
    pub fn load(workdir: PathBuf) -> anyhow::Result<Store> {
        let path = workdir.join(STATE_FILE_NAME);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupted", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Store { workdir, state })
    }

    fn save(&self) -> Result<(), ConsoleError> {
        let path = self.workdir.join(STATE_FILE_NAME);
        let bytes = serde_json::to_vec_pretty(&self.state).context("serializing the state")?;
        crashsafe::write_file_atomic(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
        Ok(())
    }

    pub fn all(&self) -> &[Endpoint] {
        &self.state.endpoints
    }

    pub fn get(&self, name: &str) -> Option<&Endpoint> {
        self.state.endpoints.iter().find(|e| e.name == name)
    }

    pub fn insert(&mut self, ep: Endpoint) -> Result<(), ConsoleError> {
        self.state.endpoints.push(ep);
        self.save()
    }

    pub fn remove(&mut self, name: &str) -> Result<(), ConsoleError> {
        self.state.endpoints.retain(|e| e.name != name);
        self.save()
    }

    pub fn add_role(&mut self, endpoint: &str, role: Role) -> Result<(), ConsoleError> {
        let ep = self
            .state
            .endpoints
            .iter_mut()
            .find(|e| e.name == endpoint)
            .ok_or_else(|| {
                ConsoleError::NotFound(format!("endpoint \"{endpoint}\" does not exist"))
            })?;
        ep.roles.retain(|r| r.name != role.name);
        ep.roles.push(role);
        self.save()
    }

    pub fn remove_role(&mut self, endpoint: &str, role: &str) -> Result<(), ConsoleError> {
        if let Some(ep) = self.state.endpoints.iter_mut().find(|e| e.name == endpoint) {
            ep.roles.retain(|r| r.name != role);
        }
        self.save()
    }
}
