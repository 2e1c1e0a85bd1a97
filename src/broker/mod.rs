//! Broker workers (SPEC §7): GPU boxes behind NAT dial in over a websocket, and any node serves
//! them. This module holds the protocol ([`frame`]) and the node's side of a worker connection
//! apart from any socket ([`session`]: streams, credit windows, cancellation, a lost worker), and
//! the node's workers ([`registry`]: who serves what, the choice of a worker, expiry), and a
//! worker's connection as an upstream transport ([`carrier`]: the data plane's failover, relay
//! and usage apply unchanged). The
//! websocket endpoint, the shared registration and the relay across nodes build on them (issue
//! 15, in progress: until they exist a broker provider has no workers, and its requests fail
//! like an unreachable upstream's).
//!
//! ## The protocol
//!
//! **Worker ↔ node** ([`frame`]): one websocket binary message per frame, multiplexing the
//! worker's requests by a stream id the node picks (u64, never reused on a connection; 0 is the
//! connection itself). The worker speaks first: `Register` (provider, models, maximum
//! concurrency, version, labels), answered by `Accepted` or `Refused` (then the node closes). The
//! node sends `Request` (a JSON head — the upstream path, the headers the upstream receives, the
//! stream flag — and the body); the worker answers `Head`, then `Chunk`s, then `End`, or `Fail` at
//! any point; `Heartbeat` every `heartbeat_ms`. The answer travels back over the connection the
//! worker opened: nothing ever dials a worker (Dynamo #8058: replies dialled back to a worker's
//! address never arrive behind NAT).
//!
//! **Flow control**: per stream, by credits. A `Request` grants the worker a window of chunks;
//! the node sends `Credit(n)` as the client takes them. A worker with no credit stops reading its
//! local upstream, whose TCP window then slows the model's server: a slow client slows its own
//! stream down to the worker, and never the other streams sharing the socket (a websocket is one
//! TCP stream, so the socket's own backpressure would stall them all). No buffer grows beyond a
//! window on any hop.
//!
//! **Cancellation**: `Cancel` when the client goes away; the worker drops its upstream request.
//! A worker that vanishes (its socket closes, or no heartbeat within the TTL) fails every stream
//! it carried: those that had sent nothing fail over like any upstream error, those under way
//! end with an error event and a partial usage record.
//!
//! **Across nodes** (a request on node A for a worker connected to node B), through the shared
//! state: A appends the request to B's inbox (a Redis stream read by B; in process, a channel),
//! B relays the worker's frames to a per-request stream A reads, and A's credits and cancellation
//! go back through B's inbox. Streams, not pub/sub: pub/sub drops messages for a slow subscriber,
//! a stream keeps them in order until read, and its length is bounded by the credit window. A
//! lost node is seen in the node registry: A ends its relays to a dead B with an error, and B
//! cancels the requests of a dead A (no credit comes back) after the upstream idle timeout.
//!
//! Frames are size-limited on both sides, and a malformed or hostile frame ends the connection it
//! came on, never the node.
//!
//! Architecture Invariant: knows nothing of HTTP clients, tenants or the proxy's phases.

pub mod carrier;
pub mod frame;
pub mod registry;
pub mod session;
