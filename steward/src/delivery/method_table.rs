//! The methods a node serves, by name; changed while running by `serve` / `unserve`.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::wire::handler::Method;

/// The methods a node serves.
pub(crate) struct MethodTable {
    methods: RwLock<HashMap<String, Method>>,
}

impl MethodTable {
    /// A table serving `methods`.
    pub(crate) fn new(methods: HashMap<String, Method>) -> Self {
        MethodTable {
            methods: RwLock::new(methods),
        }
    }

    /// Whether `method` is served now.
    pub(crate) fn serves(&self, method: &str) -> bool {
        self.methods
            .read()
            .map(|m| m.contains_key(method))
            .unwrap_or(false)
    }

    /// The method served as `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<Method> {
        self.methods.read().ok().and_then(|m| m.get(name).cloned())
    }

    /// Serves (or replaces) `name`; false if the table is poisoned.
    pub(crate) fn insert(&self, name: &str, method: Method) -> bool {
        match self.methods.write() {
            Ok(mut m) => {
                m.insert(name.to_owned(), method);
                true
            }
            Err(_) => false,
        }
    }

    /// Stops serving `name`; true if it was served.
    pub(crate) fn remove(&self, name: &str) -> bool {
        self.methods
            .write()
            .map(|mut m| m.remove(name).is_some())
            .unwrap_or(false)
    }
}
