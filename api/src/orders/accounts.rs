//! Account names (what tokens carry) to the engine's dense `AccountId`s.

use std::collections::HashMap;

use stocksblitz_engine::orders::AccountId;

pub struct Accounts {
    names: Vec<String>,
    ids: HashMap<String, AccountId>,
}

impl Accounts {
    pub fn new(names: &[String]) -> Self {
        Self {
            names: names.to_vec(),
            ids: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), AccountId(i as u32)))
                .collect(),
        }
    }

    pub fn id(&self, name: &str) -> Option<AccountId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: AccountId) -> &str {
        self.names.get(id.index()).map_or("", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
