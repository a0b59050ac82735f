//! A value many tasks read and the agent replaces whole, e.g. the tag names after a tag-map
//! reload. Readers take a cheap `Arc` snapshot and never hold the lock while they work.

use std::sync::{Arc, RwLock};

#[derive(Debug)]
pub struct Shared<T: ?Sized>(RwLock<Arc<T>>);

impl<T: ?Sized> Shared<T> {
    pub fn new(value: Arc<T>) -> Self {
        Self(RwLock::new(value))
    }

    /// The current value (a snapshot: a later `set` does not change it).
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// Tag names by `TagId` (the journal's registry: it only ever grows).
pub type TagNames = Shared<[String]>;
