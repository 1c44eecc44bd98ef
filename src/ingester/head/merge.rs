//! What a head query returns: per series, its labels and the chunks that
//! overlap the query's range (merged by readers with
//! [`crate::chunk::merge::merge_chunks`]).

use crate::chunk::merge::{ChunkData, HistogramChunkData};
use crate::model::Labels;

/// One series of a head query: its labels and the chunks that overlap the
/// query's range, ordered by `min_t` (they may overlap each other).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesChunks {
    pub labels: Labels,
    pub chunks: Vec<ChunkData>,
    /// Native histogram chunks, ordered by `min_t` (merged with
    /// [`crate::chunk::merge::merge_histogram_chunks`]).
    pub histogram_chunks: Vec<HistogramChunkData>,
}
