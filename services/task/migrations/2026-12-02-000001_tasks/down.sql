DROP TABLE compliance_records;
DROP TABLE tasks;
