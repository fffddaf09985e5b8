//! S3 XML answers the SDK refuses, parsed with quick-xml (issue 16).
//!
//! Some servers (moto) answer ListParts and CompleteMultipartUpload with
//! another root element (`ListPartsResponse`, `CompleteMultipartUploadResponse`)
//! than AWS, and the SDK turns any `200` whose body it cannot parse into an
//! error. `multipart.rs` hands such bodies here. They come from the network,
//! so they are parsed by a real XML parser (every entity and character
//! reference is decoded: `&amp;`, `&lt;`, `&#34;`, not just `&quot;`) into
//! serde structs, and a truncated or malformed body is an [`XmlError`] naming
//! the answer, never a panic. The root element's name is not checked (that is
//! the point); the caller decides from it whether the body is meant for us.

use serde::Deserialize;

use crate::backend::CompletedPart;

/// A body that does not parse as the expected answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Which answer was expected (`ListParts`, ...).
    pub answer: &'static str,
    pub reason: String,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed {} answer: {}", self.answer, self.reason)
    }
}

impl std::error::Error for XmlError {}

/// One page of a ListParts answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartsPage {
    /// The object key the server names (empty if it names none).
    pub key: String,
    pub parts: Vec<CompletedPart>,
    pub truncated: bool,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct ListPartsXml {
    #[serde(rename = "Key", default)]
    key: String,
    #[serde(rename = "IsTruncated", default)]
    is_truncated: bool,
    #[serde(rename = "NextPartNumberMarker", default)]
    next_part_number_marker: Option<String>,
    #[serde(rename = "Part", default)]
    parts: Vec<PartXml>,
}

#[derive(Deserialize)]
struct PartXml {
    #[serde(rename = "PartNumber")]
    part_number: u32,
    #[serde(rename = "ETag", default)]
    etag: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
}

#[derive(Deserialize)]
struct CompleteXml {
    #[serde(rename = "ETag")]
    etag: String,
}

fn parse<T: for<'de> Deserialize<'de>>(answer: &'static str, body: &str) -> Result<T, XmlError> {
    quick_xml::de::from_str(body).map_err(|e| XmlError { answer, reason: e.to_string() })
}

/// The ETag as the backend interface keeps it: without the quotes S3 sends.
fn bare(etag: &str) -> String {
    etag.trim().trim_matches('"').to_owned()
}

/// Parses one ListParts page.
pub fn parse_list_parts(body: &str) -> Result<PartsPage, XmlError> {
    let x: ListPartsXml = parse("ListParts", body)?;
    Ok(PartsPage {
        key: x.key,
        parts: x
            .parts
            .into_iter()
            .map(|p| CompletedPart {
                part_number: p.part_number,
                etag: p.etag.as_deref().map(bare).unwrap_or_default(),
                size: p.size,
            })
            .collect(),
        truncated: x.is_truncated,
        next: x.next_part_number_marker.map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()),
    })
}

/// The (bare) ETag of a CompleteMultipartUpload answer.
pub fn parse_complete(body: &str) -> Result<String, XmlError> {
    let x: CompleteXml = parse("CompleteMultipartUpload", body)?;
    Ok(bare(&x.etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListPartsResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bk</Bucket><Key>a&amp;b &lt;c&gt;</Key><UploadId>u1</UploadId>
  <PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker>
  <MaxParts>1000</MaxParts><IsTruncated>true</IsTruncated>
  <Part><PartNumber>1</PartNumber><LastModified>2026-01-01T00:00:00Z</LastModified>
    <ETag>&quot;e&amp;1&quot;</ETag><Size>5242880</Size></Part>
  <Part><PartNumber> 2 </PartNumber><ETag>&#34;e&lt;2&#34;</ETag><Size>7</Size></Part>
</ListPartsResponse>"#;

    #[test]
    fn list_parts_decodes_every_escape() {
        let p = parse_list_parts(LIST).unwrap();
        assert_eq!(p.key, "a&b <c>");
        assert!(p.truncated);
        assert_eq!(p.next.as_deref(), Some("2"));
        let got: Vec<_> = p.parts.iter().map(|p| (p.part_number, p.etag.as_str(), p.size)).collect();
        assert_eq!(got, [(1, "e&1", 5_242_880), (2, "e<2", 7)]);
    }

    #[test]
    fn list_parts_without_parts_or_marker() {
        let p =
            parse_list_parts("<ListPartsResult><IsTruncated>false</IsTruncated></ListPartsResult>").unwrap();
        assert_eq!(p, PartsPage::default());
    }

    #[test]
    fn malformed_answers_are_errors() {
        for (i, bad) in [
            &LIST[..LIST.len() / 2], // truncated
            "<ListPartsResponse><Part><PartNumber>x</PartNumber><Size>1</Size></Part></ListPartsResponse>",
            "<ListPartsResponse><Part><PartNumber>1</PartNumber></Part></ListPartsResponse>", // no Size
            "<ListPartsResponse><Key>a&bogus;</Key></ListPartsResponse>", // unknown entity
            "<ListPartsResponse><IsTruncated>maybe</IsTruncated></ListPartsResponse>",
            "",
        ]
        .into_iter()
        .enumerate()
        {
            let e = parse_list_parts(bad).expect_err(&format!("case {i} parsed"));
            assert!(e.to_string().starts_with("malformed ListParts answer: "), "{e}");
        }
    }

    #[test]
    fn complete_answer() {
        let body = r#"<CompleteMultipartUploadResponse><Location>http://x/bk/a%26b</Location>
<Bucket>bk</Bucket><Key>a&amp;b</Key><ETag>&#34;abc-2&#34;</ETag></CompleteMultipartUploadResponse>"#;
        assert_eq!(parse_complete(body).unwrap(), "abc-2");
        let e = parse_complete("<CompleteMultipartUploadResponse><Bucket>bk</Bucket>").unwrap_err();
        assert!(e.to_string().starts_with("malformed CompleteMultipartUpload answer"), "{e}");
    }
}
