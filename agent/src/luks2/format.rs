//! Writing LUKS2 volumes.
