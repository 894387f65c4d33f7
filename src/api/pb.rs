//! Generated gRPC code (`tonic-prost-build`, from `proto/bi/data/v1/`) and
//! the descriptor set served by reflection. Re-exported as `crate::pb`.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("bi.data.v1");
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bi_data_descriptor");
