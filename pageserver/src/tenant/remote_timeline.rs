//! A timeline in remote storage (docs/remote_storage.md): the object keys
//! and the index ([`index`]), and the queue that uploads a timeline's layer
//! files and indexes in order ([`upload`]).

pub mod index;
pub mod upload;

use std::sync::Arc;

use anyhow::Context;
use zenith_utils::id::TenantId;
use zenith_utils::remote_storage::RemoteStorage;

use crate::tenant::timeline::Timeline;
use index::{newest_index, timeline_prefix, Generation, IndexPart};
use upload::RemoteTimeline;

/// What a tenant's timelines need to upload: the store, the runtime their
/// upload workers run on, and this attachment's generation.
#[derive(Clone, Debug)]
pub struct TenantRemote {
    pub storage: RemoteStorage,
    pub runtime: tokio::runtime::Handle,
    pub generation: Generation,
}

impl TenantRemote {
    /// Starts the upload queue of a timeline the tenant has just loaded or
    /// created: from the newest remote index at or below our generation
    /// (its layers need no new upload), then every local layer it lacks.
    /// Blocking (runs requests on the runtime; call it off async workers).
    pub fn start_timeline(
        &self,
        tenant_id: TenantId,
        tl: &Timeline,
    ) -> anyhow::Result<Arc<RemoteTimeline>> {
        let prefix = timeline_prefix(tenant_id, tl.timeline_id)?;
        let remote = self.runtime.block_on(async {
            let objects = self
                .storage
                .list(Some(&prefix))
                .await
                .with_context(|| format!("listing {prefix} in {}", self.storage))?;
            let paths: Vec<_> = objects.into_iter().map(|o| o.path).collect();
            let Some((key, g, seq)) = newest_index(&paths, self.generation) else {
                return Ok::<_, anyhow::Error>(None);
            };
            let bytes = self.storage.get(key).await?;
            let index = IndexPart::from_json(key.as_str(), &bytes)?;
            Ok(Some((index, g, seq)))
        })?;
        let layers = tl.layer_paths();
        let rt = RemoteTimeline::start(
            self.storage.clone(),
            &self.runtime,
            tenant_id,
            tl.timeline_id,
            self.generation,
            remote,
            layers,
            tl.metadata(),
        )
        .context("reading the local layers to upload")?;
        Ok(rt)
    }
}

#[cfg(test)]
mod tests;
