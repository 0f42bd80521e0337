//! Layer 8, central: the key registry, trust bundles and enrolment with join tokens.

pub(crate) mod enrol;
pub(crate) mod registry;

use std::sync::Arc;

use crate::delivery::{Delivery, Registrar};
use registry::Registry;

/// Central's own work: the key registry over the delivery layer's handles (on central only).
pub(crate) struct Central {
    /// The delivery handles (outbox, security, tasks, …).
    pub d: Arc<Delivery>,
    /// The key registry.
    pub reg: Registry,
}

impl Central {
    /// Central over `d` with `reg`; takes key registrations off the receiver from now on.
    pub(crate) fn start(d: Arc<Delivery>, reg: Registry) -> Arc<Central> {
        let central = Arc::new(Central { d, reg });
        let me = Arc::downgrade(&central);
        let registrar: Registrar = Arc::new(move |env, reply_to| {
            let me = me.clone();
            Box::pin(async move {
                if let Some(c) = me.upgrade() {
                    registry::on_register(&c, env, reply_to).await;
                }
            })
        });
        let _ = central.d.registrar.set(registrar);
        central
    }
}
