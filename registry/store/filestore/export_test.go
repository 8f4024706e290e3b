package filestore

// AppendRecordFrame lets the external tests build log files by hand.
var AppendRecordFrame = appendRecordFrame

// OSFS is the store's default file system, for the baseline benchmark.
func OSFS() FS { return osFS{} }
