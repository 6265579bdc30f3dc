//! `osprey flows` (see below).
