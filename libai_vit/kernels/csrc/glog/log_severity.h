// The severity names OneFlow's bundled glog headers expect from "glog/log_severity.h", which the
// oneflow 0.9.0 wheel does not ship. logging.h includes this file inside `namespace google`; the
// values are glog's (INFO 0 .. FATAL 3), as the library the extension links was built with.
#ifndef LIBAI_VIT_KERNELS_GLOG_LOG_SEVERITY_H_
#define LIBAI_VIT_KERNELS_GLOG_LOG_SEVERITY_H_

typedef int LogSeverity;

const int GLOG_INFO = 0, GLOG_WARNING = 1, GLOG_ERROR = 2, GLOG_FATAL = 3, NUM_SEVERITIES = 4;
const int INFO = GLOG_INFO, WARNING = GLOG_WARNING, ERROR = GLOG_ERROR, FATAL = GLOG_FATAL;

#ifdef NDEBUG
#define DFATAL_LEVEL ERROR
#else
#define DFATAL_LEVEL FATAL
#endif

extern GOOGLE_GLOG_DLL_DECL const char* const LogSeverityNames[NUM_SEVERITIES];

#endif  // LIBAI_VIT_KERNELS_GLOG_LOG_SEVERITY_H_
