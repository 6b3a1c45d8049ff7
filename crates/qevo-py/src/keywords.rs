//! The Python keyword of each field a library error names, so a `QevoError` names what
//! the user typed (the CLI does the same with its flags: `qevo-cli`'s `flag_names`).
//! `qevo.search`'s keywords are the library's `search::Settings` fields, so a field
//! needs a row here only where a stage names it in its own terms: the tune stage of
//! `tune_front` speaks of `TuneConfig`'s fields.

/// Library field → `qevo.search` keyword, where they differ.
pub const SEARCH_KEYWORD_OF: &[(&str, &str)] = &[
    ("steps", "tune_steps"),
    ("sub_scales", "tune_sub_scales"),
    // The tune stage splits every window of the calibration text into training and
    // validation windows; too few windows means too short a text.
    ("validation", "text"),
];

/// The keyword of `field` in `table`, else the field itself (a `Settings` field is its
/// own keyword; a dotted field is a key inside a file, not a keyword).
pub fn keyword_of<'a>(field: &'a str, table: &[(&str, &'a str)]) -> &'a str {
    table
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(field, |(_, k)| k)
}

/// `e` with every field it names (a setting, the settings a checkpoint was made with)
/// renamed by `table`; other errors unchanged.
pub fn in_keywords(e: qevo::Error, table: &[(&str, &str)]) -> qevo::Error {
    match e {
        qevo::Error::Setting { field, msg } => qevo::Error::Setting {
            field: keyword_of(&field, table).to_string(),
            msg,
        },
        qevo::Error::ResumeMismatch { path, differences } => qevo::Error::ResumeMismatch {
            path,
            differences: differences
                .into_iter()
                .map(|d| qevo::error::Difference {
                    field: keyword_of(&d.field, table).to_string(),
                    ..d
                })
                .collect(),
        },
        other => other,
    }
}
