//! trovedb benchmark helpers.
