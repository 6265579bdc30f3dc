//! Fields from user-space facts: the path an event changes, drops, account changes.

use std::borrow::Cow;

use crate::pipeline::event::Payload;
use crate::security::facts::drops::DELETED;
use crate::security::facts::target::changed_path;

use super::fields::{Value, View};

impl<'a> View<'a> {
    /// `fs.path.target`, `exec.dropped`/`dropper`/`drop_how` and `account.*`.
    pub(super) fn facts_field(&self, field: &str) -> Option<Value<'a>> {
        let str_ = |b: &'a [u8]| Some(Value::Str(Cow::Borrowed(b)));
        let is_exec = matches!(self.event.payload, Payload::Exec(_));
        let dropper = self.facts.dropper;
        let account = self.facts.account;
        match field {
            "fs.path.target" => changed_path(&self.event.payload).map(Value::Str),
            "exec.dropped" => {
                is_exec.then_some(Value::Bool(dropper.is_some_and(|d| d.how != DELETED)))
            }
            "exec.deleted" => {
                is_exec.then_some(Value::Bool(dropper.is_some_and(|d| d.how == DELETED)))
            }
            "exec.dropper" => dropper
                .filter(|d| d.how != DELETED)
                .and_then(|d| str_(&d.comm)),
            "exec.drop_how" => dropper
                .filter(|d| d.how != DELETED)
                .and_then(|d| str_(d.how.as_bytes())),
            "account.name" => account.and_then(|a| str_(&a.name)),
            "account.uid" => account.map(|a| Value::Int(a.uid)),
            "account.gid" => account.map(|a| Value::Int(a.gid)),
            "account.groups" => {
                account.map(|a| Value::StrList(a.groups.iter().map(Vec::as_slice).collect()))
            }
            "account.new" => account.map(|a| Value::Bool(a.new)),
            _ => None,
        }
    }
}
