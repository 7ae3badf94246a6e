//! Which attributes the index keeps at each level (PS3.18 Tables 10.6.1-5, 10.6.3-3/4/5, plus
//! what viewers lay images out with). Ingest copies exactly these into the index so that no
//! later request re-parses a file.

use dicom_core::Tag;

const fn t(group: u16, element: u16) -> Tag {
    Tag(group, element)
}

/// Patient and study attributes (PS3.18 Table 10.6.3-3 and the study matching keys).
pub const STUDY: &[Tag] = &[
    t(0x0008, 0x0005), // SpecificCharacterSet
    t(0x0008, 0x0020), // StudyDate
    t(0x0008, 0x0030), // StudyTime
    t(0x0008, 0x0050), // AccessionNumber
    t(0x0008, 0x0051), // IssuerOfAccessionNumberSequence
    t(0x0008, 0x0090), // ReferringPhysicianName
    t(0x0008, 0x0201), // TimezoneOffsetFromUTC
    t(0x0008, 0x1030), // StudyDescription
    t(0x0008, 0x1060), // NameOfPhysiciansReadingStudy
    t(0x0008, 0x1032), // ProcedureCodeSequence
    t(0x0010, 0x0010), // PatientName
    t(0x0010, 0x0020), // PatientID
    t(0x0010, 0x0021), // IssuerOfPatientID
    t(0x0010, 0x0030), // PatientBirthDate
    t(0x0010, 0x0032), // PatientBirthTime
    t(0x0010, 0x0040), // PatientSex
    t(0x0010, 0x1000), // OtherPatientIDs
    t(0x0010, 0x1010), // PatientAge
    t(0x0010, 0x1020), // PatientSize
    t(0x0010, 0x1030), // PatientWeight
    t(0x0010, 0x2160), // EthnicGroup
    t(0x0010, 0x4000), // PatientComments
    t(0x0020, 0x000D), // StudyInstanceUID
    t(0x0020, 0x0010), // StudyID
    t(0x0032, 0x1060), // RequestedProcedureDescription
];

/// Series attributes (PS3.18 Table 10.6.3-4 and the series matching keys).
pub const SERIES: &[Tag] = &[
    t(0x0008, 0x0021), // SeriesDate
    t(0x0008, 0x0031), // SeriesTime
    t(0x0008, 0x0060), // Modality
    t(0x0008, 0x0070), // Manufacturer
    t(0x0008, 0x0080), // InstitutionName
    t(0x0008, 0x1010), // StationName
    t(0x0008, 0x103E), // SeriesDescription
    t(0x0008, 0x1040), // InstitutionalDepartmentName
    t(0x0008, 0x1050), // PerformingPhysicianName
    t(0x0008, 0x1070), // OperatorsName
    t(0x0008, 0x1090), // ManufacturerModelName
    t(0x0018, 0x0015), // BodyPartExamined
    t(0x0018, 0x1030), // ProtocolName
    t(0x0018, 0x5100), // PatientPosition
    t(0x0020, 0x000E), // SeriesInstanceUID
    t(0x0020, 0x0011), // SeriesNumber
    t(0x0020, 0x0060), // Laterality
    t(0x0040, 0x0244), // PerformedProcedureStepStartDate
    t(0x0040, 0x0245), // PerformedProcedureStepStartTime
    t(0x0040, 0x0253), // PerformedProcedureStepID
    t(0x0040, 0x0254), // PerformedProcedureStepDescription
    t(0x0040, 0x0275), // RequestAttributesSequence
];

/// Instance attributes (PS3.18 Table 10.6.3-5) and what viewers need to lay images out.
pub const INSTANCE: &[Tag] = &[
    t(0x0008, 0x0005), // SpecificCharacterSet
    t(0x0008, 0x0008), // ImageType
    t(0x0008, 0x0016), // SOPClassUID
    t(0x0008, 0x0018), // SOPInstanceUID
    t(0x0008, 0x0022), // AcquisitionDate
    t(0x0008, 0x0023), // ContentDate
    t(0x0008, 0x0032), // AcquisitionTime
    t(0x0008, 0x0033), // ContentTime
    t(0x0008, 0x002A), // AcquisitionDateTime
    t(0x0018, 0x0050), // SliceThickness
    t(0x0018, 0x0088), // SpacingBetweenSlices
    t(0x0018, 0x1063), // FrameTime
    t(0x0018, 0x1164), // ImagerPixelSpacing
    t(0x0020, 0x0012), // AcquisitionNumber
    t(0x0020, 0x0013), // InstanceNumber
    t(0x0020, 0x0020), // PatientOrientation
    t(0x0020, 0x0032), // ImagePositionPatient
    t(0x0020, 0x0037), // ImageOrientationPatient
    t(0x0020, 0x0052), // FrameOfReferenceUID
    t(0x0020, 0x0100), // TemporalPositionIdentifier
    t(0x0020, 0x1041), // SliceLocation
    t(0x0028, 0x0002), // SamplesPerPixel
    t(0x0028, 0x0004), // PhotometricInterpretation
    t(0x0028, 0x0006), // PlanarConfiguration
    t(0x0028, 0x0008), // NumberOfFrames
    t(0x0028, 0x0010), // Rows
    t(0x0028, 0x0011), // Columns
    t(0x0028, 0x0030), // PixelSpacing
    t(0x0028, 0x0100), // BitsAllocated
    t(0x0028, 0x0101), // BitsStored
    t(0x0028, 0x0102), // HighBit
    t(0x0028, 0x0103), // PixelRepresentation
    t(0x0028, 0x1050), // WindowCenter
    t(0x0028, 0x1051), // WindowWidth
    t(0x0028, 0x1052), // RescaleIntercept
    t(0x0028, 0x1053), // RescaleSlope
    t(0x0028, 0x1054), // RescaleType
    t(0x0028, 0x1055), // WindowCenterWidthExplanation
    t(0x0028, 0x1056), // VOILUTFunction
    t(0x0028, 0x2110), // LossyImageCompression
    t(0x0028, 0x2112), // LossyImageCompressionRatio
    t(0x0028, 0x2114), // LossyImageCompressionMethod
    t(0x0028, 0x6010), // RepresentativeFrameNumber
    t(0x0042, 0x0010), // DocumentTitle
    t(0x0040, 0xA043), // ConceptNameCodeSequence
    t(0x0040, 0xA491), // CompletionFlag
    t(0x0040, 0xA493), // VerificationFlag
    t(0x0070, 0x0080), // ContentLabel
    t(0x0070, 0x0081), // ContentDescription
];
