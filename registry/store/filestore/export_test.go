package filestore

// AppendRecordFrame lets the external tests build log files by hand.
var AppendRecordFrame = appendRecordFrame
