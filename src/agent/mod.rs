//! The agent that runs inside the target, and the protocol we speak with it.
//!
//! - `bootstrap.py`: the few lines the injector runs in the target. They
//!   start a thread that connects back to us, checks who we are, and runs
//!   the agent it receives. One statement, never raises, leaves no names.
//! - `agent.py`: the stdlib-only agent (Python 2.7 and 3.6-3.15): a request
//!   loop over the socket with per-thread output capture; it undoes
//!   everything when the session ends.
//! - [`protocol`]: length-prefixed frames of a JSON header line and a binary
//!   payload, and the typed messages.
//! - [`session`]: the tool side: [`Listener`] before injection, [`Session`]
//!   after.

pub mod protocol;
pub mod session;

pub use protocol::{
    CompileCheck, CompileStatus, Completions, EvalResult, ExecMode, ExecResult, Hello, Pong,
    RemoteError, Response,
};
pub use session::{Detached, Listener, Session, SessionError};
