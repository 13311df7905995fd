//! Sealed segment files: written once by [`writer`], memory-mapped by [`reader`].

pub(crate) mod directory;
pub(crate) mod layout;
pub(crate) mod reader;
pub(crate) mod writer;

pub(crate) fn file_name(id: u64) -> String {
    format!("seg-{id:010}.seg")
}
