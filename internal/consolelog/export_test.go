package consolelog

// SelfExe lets tests run the logger from a copy of the test binary.
var SelfExe = &selfExe
