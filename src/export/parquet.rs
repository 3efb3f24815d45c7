//! Preference rows as Parquet, through the parquet crate's column writers (no
//! arrow). Rows are buffered one row group at a time, so memory is bounded by
//! [`ROW_GROUP`] rows whatever the export's size; each closed row group's bytes
//! are handed on at once.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use parquet::{
    basic::Compression,
    column::writer::ColumnWriter,
    data_type::ByteArray,
    file::{properties::WriterProperties, writer::SerializedFileWriter},
    schema::parser::parse_message_type,
};

use super::rows::PrefRow;

/// Rows per row group.
pub const ROW_GROUP: usize = 16_384;

/// The schema (README documents it; the compatibility test reads it back).
pub const SCHEMA: &str = "message preference {
    required binary pair_id (STRING);
    optional binary external_id (STRING);
    required binary prompt (STRING);
    required binary chosen (STRING);
    required binary rejected (STRING);
    required binary chosen_id (STRING);
    required binary rejected_id (STRING);
    optional binary chosen_policy (STRING);
    optional binary rejected_policy (STRING);
    required binary winner (STRING);
    required binary aggregation (STRING);
    required int32 votes;
    required int32 votes_chosen;
    required int32 votes_rejected;
    required int32 votes_tie;
    required int32 votes_cant_tell;
    required int32 raters;
    required double agreement;
    required double margin;
    required boolean gold;
}";

/// Bytes a writer has produced and nobody has taken yet (the encoders own their
/// writer, and the producer takes what it wrote after each batch).
#[derive(Clone, Default)]
pub(crate) struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("export buffer"))
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("parquet buffer")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct ParquetEncoder {
    writer: SerializedFileWriter<Shared>,
    out: Shared,
    rows: Vec<PrefRow>,
}

impl ParquetEncoder {
    pub fn new() -> anyhow::Result<Self> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("backflip {}", env!("CARGO_PKG_VERSION")))
            .build();
        let out = Shared::default();
        let writer = SerializedFileWriter::new(out.clone(), schema, Arc::new(props))?;
        Ok(Self {
            writer,
            out,
            rows: Vec::with_capacity(ROW_GROUP),
        })
    }

    /// Add a row; returns encoded bytes when a row group was completed.
    pub fn push(&mut self, row: PrefRow) -> anyhow::Result<Option<Vec<u8>>> {
        self.rows.push(row);
        if self.rows.len() < ROW_GROUP {
            return Ok(None);
        }
        self.flush_group()?;
        Ok(Some(self.take()))
    }

    /// The rest of the file (last row group and footer).
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        self.flush_group()?;
        let out = self.out.clone();
        self.writer.close()?;
        Ok(out.take())
    }

    fn take(&self) -> Vec<u8> {
        self.out.take()
    }

    fn flush_group(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let mut group = self.writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut col) = group.next_column()? {
            write_column(col.untyped(), index, &rows)?;
            col.close()?;
            index += 1;
        }
        group.close()?;
        self.rows = rows;
        self.rows.clear();
        Ok(())
    }
}

fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// Write column `index` of [`SCHEMA`] for `rows`.
fn write_column(col: &mut ColumnWriter<'_>, index: usize, rows: &[PrefRow]) -> anyhow::Result<()> {
    let required = |f: &dyn Fn(&PrefRow) -> String| -> Vec<ByteArray> {
        rows.iter().map(|r| bytes(&f(r))).collect()
    };
    // Optional strings: values for the present ones, definition level 1/0 for each row.
    let optional = |f: &dyn Fn(&PrefRow) -> Option<&str>| -> (Vec<ByteArray>, Vec<i16>) {
        let values = rows.iter().filter_map(f).map(bytes).collect();
        let levels = rows.iter().map(|r| i16::from(f(r).is_some())).collect();
        (values, levels)
    };
    let ints = |f: &dyn Fn(&PrefRow) -> i32| -> Vec<i32> { rows.iter().map(f).collect() };
    match (index, col) {
        (0..=10, ColumnWriter::ByteArrayColumnWriter(w)) => {
            let (values, levels) = match index {
                0 => (required(&|r| r.pair_id.to_string()), None),
                1 => {
                    let (v, l) = optional(&|r| r.external_id.as_deref());
                    (v, Some(l))
                }
                2 => (required(&|r| r.prompt.clone()), None),
                3 => (required(&|r| r.chosen.clone()), None),
                4 => (required(&|r| r.rejected.clone()), None),
                5 => (required(&|r| r.chosen_id.to_string()), None),
                6 => (required(&|r| r.rejected_id.to_string()), None),
                7 => {
                    let (v, l) = optional(&|r| r.chosen_policy.as_deref());
                    (v, Some(l))
                }
                8 => {
                    let (v, l) = optional(&|r| r.rejected_policy.as_deref());
                    (v, Some(l))
                }
                9 => (required(&|r| r.winner.to_owned()), None),
                _ => (required(&|r| r.aggregation.to_owned()), None),
            };
            w.write_batch(&values, levels.as_deref(), None)?;
        }
        (11..=16, ColumnWriter::Int32ColumnWriter(w)) => {
            let values = match index {
                11 => ints(&|r| r.votes),
                12 => ints(&|r| r.votes_chosen),
                13 => ints(&|r| r.votes_rejected),
                14 => ints(&|r| r.votes_tie),
                15 => ints(&|r| r.votes_cant_tell),
                _ => ints(&|r| r.raters),
            };
            w.write_batch(&values, None, None)?;
        }
        (17 | 18, ColumnWriter::DoubleColumnWriter(w)) => {
            let values: Vec<f64> = rows
                .iter()
                .map(|r| if index == 17 { r.agreement } else { r.margin })
                .collect();
            w.write_batch(&values, None, None)?;
        }
        (19, ColumnWriter::BoolColumnWriter(w)) => {
            let values: Vec<bool> = rows.iter().map(|r| r.gold).collect();
            w.write_batch(&values, None, None)?;
        }
        (i, _) => anyhow::bail!("parquet column {i} does not match the schema"),
    }
    Ok(())
}
