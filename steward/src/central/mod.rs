//! Layer 8, central: the key registry, trust bundles and enrolment with join tokens.

pub(crate) mod enrol;
pub(crate) mod registry;
