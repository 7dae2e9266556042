//! Member selection (being written).
