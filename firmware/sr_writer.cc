#include "firmware/sr_writer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include <dcmtk/config/osconfig.h>  // must precede the other DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/cmr/tid1500.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>

#include "firmware/dicom_write_util.h"
#include "base/log.h"

namespace firmware {
namespace {

namespace fs = std::filesystem;

base::Status dcmtk_error(const std::string& what, const OFCondition& cond) {
  return dcmtk_status("DICOM SR", what, cond);
}

#define SB_DCMTK(expr, what) SB_DCMTK_CHECK("DICOM SR", expr, what)

std::string decimal(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

base::Status build_and_save(const image::DicomSeries& dwi, const SrFacts& facts, const std::string& tmp_path,
                            const SrOptions& options, std::string& sr_uid) {
  const std::string version = facts.algorithm_version.empty() ? "unknown" : facts.algorithm_version;
  TID1500_MeasurementReport report(CMR_CID7021::ImagingMeasurementReport);
  SB_DCMTK(report.setLanguage(CID5000_Languages::English), "language");
  SB_DCMTK(report.getObservationContext().addDeviceObserver(new_dicom_uid(), options.model_name, options.manufacturer,
                                                             options.model_name, options.device_serial_number),
           "device observer");
  // CID 100 is extensible: the LOINC code of the procedure (MR of the brain).
  SB_DCMTK(report.addProcedureReported(DSRCodedEntryValue("24590-2", "LN", "MR Brain")), "procedure reported");

  // Image library: every DWI slice the lesion was measured on.
  SB_DCMTK(report.getImageLibrary().createNewImageLibrary(), "image library");
  SB_DCMTK(report.getImageLibrary().addImageGroup(), "image library group");
  for (const image::DicomInstance& inst : dwi.instances) {
    DcmFileFormat ff;
    const OFCondition loaded = ff.loadFile(inst.path.c_str());
    if (loaded.bad()) {
      SB_LOG(kWarning) << "DICOM SR: cannot read " << inst.path << " for the image library (" << loaded.text()
                       << "); it is left out";
      continue;
    }
    const OFCondition added =
        report.getImageLibrary().addImageEntry(*ff.getDataset(), TID1600_ImageLibrary::withoutDescriptors);
    if (added.bad() && added != CMR_EC_NoImageLibraryEntryDescriptorsToBeAdded) {
      return dcmtk_error("image library entry " + inst.path, added);
    }
  }

  // TID 1411 Volumetric ROI Measurements: the infarct as segment 1 of the SEG.
  TID1500_MeasurementReport::TID1411_Measurements& roi = report.getVolumetricROIMeasurements();
  SB_DCMTK(roi.setTrackingIdentifier("Infarct"), "tracking identifier");
  SB_DCMTK(roi.setTrackingUniqueIdentifier(new_dicom_uid()), "tracking UID");
  SB_DCMTK(roi.setFinding(DSRCodedEntryValue("55641003", "SCT", "Infarct")), "finding");
  DSRImageReferenceValue segment(UID_SegmentationStorage, facts.seg_sop_instance_uid);
  segment.getSegmentList().addItem(1);
  SB_DCMTK(roi.setReferencedSegment(segment), "referenced segment");
  SB_DCMTK(roi.setSourceSeriesForSegmentation(dwi.series_instance_uid), "source series");
  SB_DCMTK(roi.addFindingSite(DSRCodedEntryValue("12738006", "SCT", "Brain")), "finding site");

  using Units = CID7181_AbstractMultiDimensionalImageModelComponentUnits;
  using Value = TID1500_MeasurementReport::TID1411_Measurements::MeasurementValue;
  // Volume in mL (UCUM "ml"); CID 7181 is extensible, so the unit is checked by DCMTK's SR
  // value checks but not against the group's enumerated list.
  SB_DCMTK(roi.addMeasurement(CMR_CID7469::Volume,
                              Value(decimal(facts.lesion_volume_ml, 2), Units(DSRCodedEntryValue("ml", "UCUM", "milliliter")))),
           "volume");
  SB_DCMTK(roi.getMeasurement().setAlgorithmIdentification(facts.algorithm_name, version), "algorithm");
  if (!facts.model_id.empty()) {
    SB_DCMTK(roi.getMeasurement().getAlgorithmIdentification().addParameter("model_id=" + facts.model_id),
             "algorithm parameter");
  }
  SB_DCMTK(roi.addMeasurement(CID7469_GenericIntensityAndSizeMeasurements(DSRCodedEntryValue("C25463", "NCIt", "Count")),
                              Value(std::to_string(facts.lesion_count),
                                    Units(DSRCodedEntryValue("{lesions}", "UCUM", "lesions"))),
                              OFFalse /*checkEmpty*/),
           "lesion count");
  SB_DCMTK(roi.getMeasurement().setAlgorithmIdentification(facts.algorithm_name, version), "algorithm");
  if (!facts.model_id.empty()) {
    SB_DCMTK(roi.getMeasurement().getAlgorithmIdentification().addParameter("model_id=" + facts.model_id),
             "algorithm parameter");
  }
  if (!facts.plausibility_comment.empty()) {
    SB_DCMTK(roi.addQualitativeEvaluation(DSRCodedEntryValue("121106", "DCM", "Comment"),
                                          OFString(facts.plausibility_comment.c_str())),
             "plausibility comment");
  }
  if (!report.isValid()) return base::internal_error("DICOM SR: DCMTK reports the TID 1500 tree as incomplete");

  DSRDocument doc;
  SB_DCMTK(doc.setTreeFromRootTemplate(report, OFTrue /*expandTree*/), "document tree");
  const image::DicomStudyInfo& st = dwi.study;
  if (!st.specific_character_set.empty()) {
    SB_DCMTK(doc.setSpecificCharacterSet(st.specific_character_set, OFFalse), "SpecificCharacterSet");
  }
  SB_DCMTK(doc.createNewSeriesInStudy(st.study_instance_uid), "new series");
  SB_DCMTK(doc.setPatientName(st.patient_name, OFFalse), "PatientName");
  SB_DCMTK(doc.setPatientID(st.patient_id, OFFalse), "PatientID");
  SB_DCMTK(doc.setPatientBirthDate(st.patient_birth_date, OFFalse), "PatientBirthDate");
  SB_DCMTK(doc.setPatientSex(st.patient_sex, OFFalse), "PatientSex");
  SB_DCMTK(doc.setStudyDate(st.study_date, OFFalse), "StudyDate");
  SB_DCMTK(doc.setStudyTime(st.study_time, OFFalse), "StudyTime");
  SB_DCMTK(doc.setStudyID(st.study_id, OFFalse), "StudyID");
  SB_DCMTK(doc.setAccessionNumber(st.accession_number, OFFalse), "AccessionNumber");
  SB_DCMTK(doc.setReferringPhysicianName(st.referring_physician_name, OFFalse), "ReferringPhysicianName");
  if (!st.study_description.empty()) SB_DCMTK(doc.setStudyDescription(st.study_description, OFFalse), "StudyDescription");
  const int series_number = options.series_number > 0 ? options.series_number : dwi.series_number + 3000;
  SB_DCMTK(doc.setSeriesNumber(std::to_string(series_number)), "SeriesNumber");
  SB_DCMTK(doc.setSeriesDescription(options.series_description), "SeriesDescription");
  SB_DCMTK(doc.setInstanceNumber("1"), "InstanceNumber");
  SB_DCMTK(doc.setManufacturer(options.manufacturer), "Manufacturer");
  SB_DCMTK(doc.setManufacturerModelName(options.model_name), "ManufacturerModelName");
  SB_DCMTK(doc.setDeviceSerialNumber(options.device_serial_number), "DeviceSerialNumber");
  SB_DCMTK(doc.setSoftwareVersions(version), "SoftwareVersions");
  // Evidence (PS3.3 C.17.2.3): the DWI instances and the SEG.
  for (const image::DicomInstance& inst : dwi.instances) {
    SB_DCMTK(doc.getCurrentRequestedProcedureEvidence().addItem(st.study_instance_uid, dwi.series_instance_uid,
                                                                 inst.sop_class_uid, inst.sop_instance_uid),
             "evidence (DWI)");
  }
  SB_DCMTK(doc.getCurrentRequestedProcedureEvidence().addItem(st.study_instance_uid, facts.seg_series_instance_uid,
                                                               UID_SegmentationStorage, facts.seg_sop_instance_uid),
           "evidence (SEG)");
  DcmFileFormat file;
  SB_DCMTK(doc.write(*file.getDataset()), "build the dataset");
  OFString uid;
  file.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid);
  sr_uid = uid.c_str();
  const OFCondition saved = file.saveFile(tmp_path.c_str(), EXS_LittleEndianExplicit);
  if (saved.bad()) return base::unavailable("cannot write " + tmp_path + ": " + saved.text());
  return base::ok_status();
}

}  // namespace

base::Status write_sr(const image::DicomSeries& dwi, const SrFacts& facts, const std::string& path,
                      const SrOptions& options, std::string* sop_instance_uid) {
  if (dwi.instances.empty()) return base::invalid_argument("write_sr: the DWI series has no instance");
  if (facts.seg_sop_instance_uid.empty() || facts.seg_series_instance_uid.empty()) {
    return base::invalid_argument("write_sr: the SEG's SOP Instance UID and Series Instance UID must be set");
  }
  if (!(facts.lesion_volume_ml >= 0) || facts.lesion_count < 0) {
    return base::invalid_argument("write_sr: lesion volume and count must be non-negative");
  }
  const std::string tmp_path = path + ".tmp";
  std::string uid;
  base::Status status;
  try {
    status = build_and_save(dwi, facts, tmp_path, options, uid);
  } catch (const std::exception& e) {
    status = base::internal_error(std::string("DICOM SR: ") + e.what());
  }
  std::error_code ec;
  if (!status.ok()) {
    fs::remove(tmp_path, ec);
    return status.with_context("cannot write " + path);
  }
  fs::rename(tmp_path, path, ec);
  if (ec) {
    fs::remove(tmp_path, ec);
    return base::unavailable("cannot write " + path + ": " + ec.message());
  }
  if (sop_instance_uid != nullptr) *sop_instance_uid = uid;
  return base::ok_status();
}

}  // namespace firmware
