//! CPU-bound work over large prompts (classification, token counts) off the actix workers.

use crate::error::ApiError;
use crate::proxy::state::ProxyState;

/// Prompts of at least this many bytes are classified and counted off the worker threads.
pub const OFFLOAD_BYTES: usize = 256 * 1024;

/// Runs CPU-bound work over a prompt of `bytes` bytes: inline when small, else on the blocking
/// pool behind the node's semaphore for such work (one permit per core), so that no number of
/// large prompts can hold the actix workers that serve every other request.
pub async fn offload<T: Send + 'static>(
    state: &ProxyState,
    bytes: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if bytes < OFFLOAD_BYTES {
        return Ok(f());
    }
    // The permit goes with the work: a request dropped meanwhile (its client left) cannot free it
    // while the blocking work still runs.
    let permit = std::sync::Arc::clone(&state.heavy).acquire_owned().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .map_err(|_| ApiError::internal())
}
