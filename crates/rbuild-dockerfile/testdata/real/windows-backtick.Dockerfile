# escape=`

ARG WINDOWS_VERSION=ltsc2022
FROM mcr.microsoft.com/dotnet/sdk:8.0-windowsservercore-${WINDOWS_VERSION} AS build
SHELL ["powershell", "-Command", "$ErrorActionPreference = Stop; $ProgressPreference = SilentlyContinue;"]
WORKDIR C:\src
COPY *.sln .
COPY src\App\App.csproj src\App\
RUN dotnet restore
COPY . .
RUN dotnet publish src\App\App.csproj -c Release -o C:\app `
      --no-restore ; `
    Remove-Item -Recurse -Force C:\src\obj

FROM mcr.microsoft.com/dotnet/aspnet:8.0-windowsservercore-${WINDOWS_VERSION}
ENV ASPNETCORE_URLS=http://+:80 `
    DOTNET_RUNNING_IN_CONTAINER=true
WORKDIR C:\app
COPY --from=build C:\app .
RUN New-Item -ItemType Directory -Force -Path C:\logs | Out-Null ; `
    icacls C:\logs /grant "Users:(OI)(CI)M"
HEALTHCHECK CMD powershell -Command try { $r = iwr http://localhost/health -UseBasicParsing; if ($r.StatusCode -eq 200) { exit 0 } else { exit 1 } } catch { exit 1 }
EXPOSE 80
ENTRYPOINT ["dotnet", "App.dll"]
